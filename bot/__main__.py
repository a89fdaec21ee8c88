"""Entry point: ``python -m bot`` runs the Telegram bot (polling or webhook), or a terminal chat.

Without ``TELEGRAM_TOKEN`` the bot chats in this terminal, but only on one (stdin a TTY) or with
``--chat`` (a transcript piped in): a service with no token and no terminal (docker compose, systemd)
exits 2 with one line saying what to set, instead of reading end-of-file and exiting 0 again and again.
Webhook mode (``WEBHOOK_URL``) needs ``WEBHOOK_SECRET``, the token Telegram sends with every update.
Settings come from the environment (or .env with docker compose), listed below.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import re
import sys

from bot.app import ALLOWED_UPDATES, build_application, webhook_options
from bot.logs import bot_secrets
from bot.settings import VARIABLES, BotSettings
from space.cli import Parser, bind_error, cannot_listen, fail
from space.jobs import ARQ_MISSING
from space.logs import LogSettings, setup_logging
from space.version import __version__

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
    if settings.retrain.mode == "arq" and importlib.util.find_spec("arq") is None:
        return ARQ_MISSING
    if settings.webhook_url and not SECRET.fullmatch(settings.webhook_secret or ""):
        return ("WEBHOOK_URL is set but WEBHOOK_SECRET is not a valid secret (1-256 of A-Z a-z 0-9 _ -): "
                "without it anyone who finds the URL can post updates to the bot")
    return None


def build_parser() -> Parser:
    """The command line, with every environment variable the bot reads in --help."""
    parser = Parser("bot", __doc__)
    parser.option("--chat", action="store_true",
                  help="chat in this terminal (stdin), even when it is not a TTY or a token is set")
    for v in VARIABLES.values():
        parser.variable(v.name, v.kind, None, v.help, shown_default=v.default, dest=f"env_{v.name.lower()}")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Build the settings from the environment and run the bot."""
    parser = build_parser()
    args = parser.parse(argv)  # exits 2 with one line on a flag or variable it does not accept
    settings = BotSettings.from_env(parser.env)
    problem = _startup_error(settings, args.chat)
    if problem is not None:
        parser.error(problem)
    secrets = bot_secrets(settings)
    log_settings = parser.log_settings(args)
    if args.chat or not settings.token:
        from bot.terminal import chat

        # Keep the transcript readable: only warnings from the libraries (LOG_LEVEL=DEBUG shows more).
        quiet = LogSettings(log_settings.level if log_settings.level == "DEBUG" else "WARNING",
                            log_settings.format)
        setup_logging(quiet, secrets)
        asyncio.run(chat(settings))
        return
    setup_logging(log_settings, secrets)
    log.info("topicspace %s", __version__)
    application = build_application(settings)
    try:
        if settings.webhook_url:
            log.info("webhook mode on %s:%d", settings.webhook_listen, settings.webhook_port)
            application.run_webhook(**webhook_options(settings))
        else:
            log.info("long polling, engine at %s", settings.engine_url)
            application.run_polling(allowed_updates=ALLOWED_UPDATES)
    except OSError as exc:
        if not bind_error(exc):
            raise
        fail(parser.prog, cannot_listen("listen", settings.webhook_listen, settings.webhook_port, exc,
                                        "set another WEBHOOK_PORT"), status=1)


if __name__ == "__main__":
    main()
