"""Entry point: ``python -m bot`` runs the Telegram bot (polling or webhook), or a terminal chat."""

from __future__ import annotations

import asyncio
import logging

from bot.app import ALLOWED_UPDATES, build_application, webhook_options
from bot.logs import bot_secrets, configure_logging
from bot.settings import BotSettings

log = logging.getLogger(__name__)


def main() -> None:
    """Build the settings from the environment and run the bot."""
    settings = BotSettings.from_env()
    secrets = bot_secrets(settings)
    if not settings.token:
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
