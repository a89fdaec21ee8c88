"""The bot's configuration, read once from the environment in ``main()``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from space.envvars import Variable, id_list, integer, number, read, text
from space.jobs import JOB_VARIABLES, RetrainSettings

DEFAULT_ENGINE_URL = "http://127.0.0.1:8080"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"
DEFAULT_STATE_FILE = "var/bot-state.pickle"

__all__ = ["VARIABLES", "BotSettings", "RetrainSettings", "Variable", "parse_ids"]


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
        """Read the settings from environment variables (unset ones keep their defaults); a value a
        variable does not accept raises ``SettingError`` naming it."""
        env = os.environ if env is None else env

        def get(name: str) -> Any:
            return read(env, name, VARIABLES[name].kind)

        redis_url = get("REDIS_URL")
        public_url = get("ENGINE_PUBLIC_URL")
        return cls(
            token=get("TELEGRAM_TOKEN"),
            engine_url=(get("ENGINE_URL") or DEFAULT_ENGINE_URL).rstrip("/"),
            engine_public_url=public_url.rstrip("/") if public_url else None,
            cache_chat_id=get("CACHE_CHAT_ID"),
            state_store=get("BOT_STATE") or redis_url or DEFAULT_STATE_FILE,
            engine_admin_token=get("ENGINE_ADMIN_TOKEN"),
            engine_admin_url=(get("ENGINE_ADMIN_URL") or "").rstrip("/") or None,
            engine_timeout_s=_or(get("ENGINE_TIMEOUT"), 10.0),
            admin_ids=get("ADMIN_IDS") or frozenset(),
            telegram_api_url=(get("TELEGRAM_API_URL") or DEFAULT_TELEGRAM_API_URL).rstrip("/"),
            redis_url=redis_url,
            webhook_url=get("WEBHOOK_URL"),
            webhook_secret=get("WEBHOOK_SECRET"),
            webhook_listen=get("WEBHOOK_LISTEN") or "0.0.0.0",
            webhook_port=_or(get("WEBHOOK_PORT"), 8443),
            # An album holds 2 to 10 pictures (Telegram's limits for sendMediaGroup).
            album_size=min(10, max(2, _or(get("ALBUM_SIZE"), 6))),
            max_photo_mb=_or(get("BOT_MAX_PHOTO_MB"), 10.0),
            user_rate_per_minute=_or(get("USER_RATE_PER_MINUTE"), 20),
            user_burst=_or(get("USER_BURST"), 5),
            telegram_max_retries=_or(get("TELEGRAM_MAX_RETRIES"), 3),
            retrain=RetrainSettings.from_env(env),
        )


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


# Every variable the bot reads (its retraining job's included), in the order --help lists them.
VARIABLES: dict[str, Variable] = {v.name: v for v in (
    Variable("TELEGRAM_TOKEN", text(secret=True), "unset, chat in the terminal",
             "the token from @BotFather"),
    Variable("TELEGRAM_API_URL", text(), DEFAULT_TELEGRAM_API_URL, "the Bot API server's root"),
    Variable("ADMIN_IDS", id_list(), "empty",
             "Telegram user ids allowed to /retrain (and to see the model's figures in /stats)"),
    Variable("ENGINE_URL", text(), DEFAULT_ENGINE_URL, "the engine as the bot reaches it"),
    Variable("ENGINE_PUBLIC_URL", text(), "unset, inline pictures by file id only",
             "the engine as Telegram's servers reach it (inline pictures by URL)"),
    Variable("ENGINE_TIMEOUT", number(0.1), "10", "seconds before an engine call counts as failed (busy)"),
    Variable("ENGINE_ADMIN_TOKEN", text(secret=True), "unset", "the engine's admin token (/retrain "
             "versions, rollback, reload)"),
    Variable("ENGINE_ADMIN_URL", text(), "ENGINE_URL",
             "where the engine's admin endpoints are (its internal port, e.g. http://engine:9090)"),
    Variable("CACHE_CHAT_ID", integer(), "unset",
             "a private channel (the bot an admin) inline pictures are uploaded to once"),
    Variable("BOT_STATE", text(secret=True), f"REDIS_URL, else {DEFAULT_STATE_FILE}",
             "where buttons and users' data (their language) survive restarts: a redis:// URL or a file"),
    Variable("REDIS_URL", text(secret=True), "unset, memory and a lock file",
             "the file_id cache, the retrain lock and job queue, the bot's state"),
    Variable("WEBHOOK_URL", text(), "unset, long polling", "public HTTPS URL for webhook mode"),
    Variable("WEBHOOK_SECRET", text(secret=True), "unset", "the webhook's secret token (required with "
             "WEBHOOK_URL: 1-256 of A-Z a-z 0-9 _ -)"),
    Variable("WEBHOOK_LISTEN", text(), "0.0.0.0", "the webhook listener's address"),
    Variable("WEBHOOK_PORT", integer(1, 65535), "8443", "the webhook listener's port"),
    Variable("ALBUM_SIZE", integer(), "6", "pictures per album (2 to 10)"),
    Variable("BOT_MAX_PHOTO_MB", number(0.1), "10",
             "photos and image documents over this many MB are refused before the download"),
    Variable("USER_RATE_PER_MINUTE", integer(1), "20", "requests a user may send a minute"),
    Variable("USER_BURST", integer(1), "5", "requests a user may send at once"),
    Variable("TELEGRAM_MAX_RETRIES", integer(0), "3", "retries on Telegram's 429 (flood control)"),
    *JOB_VARIABLES,
)}


def parse_ids(ids: str) -> frozenset[int]:
    """Parse a comma-separated list of Telegram user ids, ignoring blanks (SettingError otherwise)."""
    return frozenset(id_list().parse(ids, "ADMIN_IDS") or ())
