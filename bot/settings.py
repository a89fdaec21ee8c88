"""The bot's configuration, read once from the environment in ``main()``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from space.jobs import RetrainSettings

DEFAULT_ENGINE_URL = "http://127.0.0.1:8080"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_STATE_FILE = "var/bot-state.pickle"

__all__ = ["BotSettings", "RetrainSettings", "parse_ids"]


@dataclass(frozen=True)
class BotSettings:
    """Everything the bot process needs, built once from the environment."""

    token: str | None = None
    engine_url: str = DEFAULT_ENGINE_URL
    # The engine as Telegram's servers reach it (inline results by URL); None: not reachable from outside.
    engine_public_url: str | None = None
    # A chat (a private channel or group with the bot in it, or an admin's chat) to upload inline pictures
    # to once, so that inline answers carry Telegram file ids instead of URLs.
    cache_chat_id: int | None = None
    # Where buttons and user data persist across restarts: a redis:// URL, a file path, or None (memory).
    state_store: str | None = None
    engine_admin_token: str | None = None
    # Where the engine's admin endpoints are (its internal port when ENGINE_METRICS_PORT is set); None:
    # engine_url.
    engine_admin_url: str | None = None
    engine_timeout_s: float = 10.0
    admin_ids: frozenset[int] = frozenset()
    telegram_api_url: str = DEFAULT_TELEGRAM_API_URL
    redis_url: str | None = None
    webhook_url: str | None = None
    webhook_secret: str | None = None
    webhook_listen: str = "0.0.0.0"
    webhook_port: int = 8443
    album_size: int = 6
    related_k: int = 10
    hashtags_k: int = 8
    inline_page: int = 10
    # An inline query waits this long for the next keystroke before the engine is asked.
    inline_debounce_s: float = 0.35
    thumb_size: int = 512
    # Photos and image documents larger than this are refused before they are downloaded (Telegram's own
    # limit for bots is 20 MB; a local Bot API server allows 2 GB).
    max_photo_mb: float = 10.0
    user_rate_per_minute: int = 20
    user_burst: int = 5
    telegram_max_retries: int = 3
    retrain: RetrainSettings = field(default_factory=RetrainSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BotSettings:
        """Read the settings from environment variables (unset ones keep their defaults)."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        engine_url = (get("ENGINE_URL") or DEFAULT_ENGINE_URL).rstrip("/")
        redis_url = get("REDIS_URL")
        public_url = get("ENGINE_PUBLIC_URL")
        cache_chat = get("CACHE_CHAT_ID")
        return cls(
            token=get("TELEGRAM_TOKEN"),
            engine_url=engine_url,
            engine_public_url=public_url.rstrip("/") if public_url else None,
            cache_chat_id=int(cache_chat) if cache_chat else None,
            state_store=get("BOT_STATE") or redis_url or DEFAULT_STATE_FILE,
            engine_admin_token=get("ENGINE_ADMIN_TOKEN"),
            engine_admin_url=(get("ENGINE_ADMIN_URL") or "").rstrip("/") or None,
            engine_timeout_s=float(get("ENGINE_TIMEOUT") or 10.0),
            admin_ids=parse_ids(get("ADMIN_IDS") or ""),
            telegram_api_url=(get("TELEGRAM_API_URL") or DEFAULT_TELEGRAM_API_URL).rstrip("/"),
            redis_url=redis_url,
            webhook_url=get("WEBHOOK_URL"),
            webhook_secret=get("WEBHOOK_SECRET"),
            webhook_listen=get("WEBHOOK_LISTEN") or "0.0.0.0",
            webhook_port=int(get("WEBHOOK_PORT") or 8443),
            # An album holds 2 to 10 pictures (Telegram's limits for sendMediaGroup).
            album_size=min(10, max(2, int(get("ALBUM_SIZE") or 6))),
            max_photo_mb=float(get("BOT_MAX_PHOTO_MB") or 10.0),
            user_rate_per_minute=int(get("USER_RATE_PER_MINUTE") or 20),
            user_burst=int(get("USER_BURST") or 5),
            telegram_max_retries=int(get("TELEGRAM_MAX_RETRIES") or 3),
            retrain=RetrainSettings.from_env(env),
        )


def parse_ids(text: str) -> frozenset[int]:
    """Parse a comma-separated list of Telegram user ids, ignoring blanks."""
    return frozenset(int(part) for part in text.replace(" ", "").split(",") if part)
