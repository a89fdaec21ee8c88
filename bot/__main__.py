"""Entry point: ``python -m bot`` runs the Telegram bot (polling or webhook), or a terminal chat.

Without ``TELEGRAM_TOKEN`` the bot chats in this terminal, but only on one (stdin a TTY) or with
``--chat`` (a transcript piped in): a service with no token and no terminal (docker compose, systemd)
exits 2 with one line saying what to set, instead of reading end-of-file and exiting 0 again and again.
Webhook mode (``WEBHOOK_URL``) needs ``WEBHOOK_SECRET``, the token Telegram sends with every update.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import sys

from bot.app import ALLOWED_UPDATES, build_application, webhook_options
from bot.logs import bot_secrets, configure_logging
from bot.settings import BotSettings

log = logging.getLogger(__name__)

NO_TOKEN = (
    "TELEGRAM_TOKEN is not set: put the token from @BotFather in .env (docker compose) or the environment; "
    "without one the bot only chats in a terminal (python -m bot on a TTY, or --chat)"
)
# Telegram's secret_token: 1-256 characters, A-Z a-z 0-9 _ -.
SECRET = re.compile(r"[A-Za-z0-9_-]{1,256}")


def _startup_error(settings: BotSettings, chat: bool) -> str | None:
    """Why this process cannot run as configured (one line), or None."""
    if not settings.token:
        return None if chat or sys.stdin.isatty() else NO_TOKEN
    if settings.webhook_url and not SECRET.fullmatch(settings.webhook_secret or ""):
        return ("WEBHOOK_URL is set but WEBHOOK_SECRET is not a valid secret (1-256 of A-Z a-z 0-9 _ -): "
                "without it anyone who finds the URL can post updates to the bot")
    return None


def main(argv: list[str] | None = None) -> None:
    """Build the settings from the environment and run the bot."""
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chat", action="store_true",
                        help="chat in this terminal (stdin), even when it is not a TTY or a token is set")
    args = parser.parse_args(argv)
    settings = BotSettings.from_env()
    problem = _startup_error(settings, args.chat)
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    secrets = bot_secrets(settings)
    if args.chat or not settings.token:
        from bot.terminal import chat

        # Keep the transcript readable: only warnings from the libraries.
        configure_logging(secrets, level=logging.WARNING)
        asyncio.run(chat(settings))
        return
    configure_logging(secrets)
    application = build_application(settings)
    if settings.webhook_url:
        log.info("webhook mode on %s:%d", settings.webhook_listen, settings.webhook_port)
        application.run_webhook(**webhook_options(settings))
    else:
        log.info("long polling, engine at %s", settings.engine_url)
        application.run_polling(allowed_updates=ALLOWED_UPDATES)


if __name__ == "__main__":
    main()
