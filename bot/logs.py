"""Logging set-up for the bot process: levels, format, and a filter that keeps its secrets out of logs."""

from __future__ import annotations

import logging
from typing import IO

from bot.settings import BotSettings
from space.logs import REDACTED, RedactingFilter, url_secrets
from space.logs import configure_logging as configure_root

__all__ = ["REDACTED", "RedactingFilter", "bot_secrets", "configure_logging"]


def bot_secrets(settings: BotSettings) -> list[str]:
    """What must never reach a log line: the Telegram token, the engine's admin token, the webhook secret,
    and the password of a Redis URL (cache, state, retrain lock)."""
    direct = [settings.token, settings.engine_admin_token, settings.webhook_secret]
    return [s for s in direct if s] + url_secrets(settings.redis_url) + url_secrets(settings.state_store)


def configure_logging(secrets: list[str], level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Log to a stream through the redacting filter; keep httpx quiet (it logs every URL)."""
    configure_root(secrets, level, stream)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
