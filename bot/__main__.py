"""Entry point: ``python -m bot`` runs the Telegram bot (polling or webhook), or a terminal chat."""

from __future__ import annotations

import asyncio
import logging

from bot.app import build_application
from bot.logs import configure_logging
from bot.settings import BotSettings

log = logging.getLogger(__name__)


def main() -> None:
    """Build the settings from the environment and run the bot."""
    settings = BotSettings.from_env()
    secrets = [s for s in (settings.token, settings.engine_admin_token, settings.webhook_secret) if s]
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
        application.run_webhook(
            listen=settings.webhook_listen,
            port=settings.webhook_port,
            url_path="telegram",
            webhook_url=settings.webhook_url.rstrip("/") + "/telegram",
            secret_token=settings.webhook_secret,
            allowed_updates=["message", "callback_query", "inline_query"],
        )
    else:
        log.info("long polling, engine at %s", settings.engine_url)
        application.run_polling(allowed_updates=["message", "callback_query", "inline_query"])


if __name__ == "__main__":
    main()
