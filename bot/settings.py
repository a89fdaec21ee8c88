"""The bot's configuration, read once from the environment in ``main()``."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ENGINE_URL = "http://127.0.0.1:8080"
DEFAULT_TELEGRAM_API_URL = "https://api.telegram.org"


@dataclass(frozen=True)
class RetrainSettings:
    """What `/retrain` runs: `python -m train all` with the job's corpus, format, weights and models dir."""

    corpus: str | None = None
    format: str = "flickr8k"
    weights: str | None = None
    models_dir: str | None = None
    extra_args: tuple[str, ...] = ()
    # The command before `--corpus ...`; tests swap in a small script that speaks the progress protocol.
    command: tuple[str, ...] = (sys.executable, "-m", "train", "all")
    redis_url: str | None = None

    def argv(self, progress_file: Path) -> list[str]:
        """The full command line of one training job."""
        if not self.corpus or not self.models_dir:
            raise ValueError("TRAIN_CORPUS and MODELS_DIR must be set to retrain")
        argv = [*self.command, "--corpus", self.corpus, "--format", self.format, "--models", self.models_dir]
        if self.weights:
            argv += ["--weights", self.weights]
        return [*argv, *self.extra_args, "--progress-file", str(progress_file)]


@dataclass(frozen=True)
class BotSettings:
    """Everything the bot process needs, built once from the environment."""

    token: str | None = None
    engine_url: str = DEFAULT_ENGINE_URL
    engine_public_url: str = DEFAULT_ENGINE_URL
    engine_admin_token: str | None = None
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
    thumb_size: int = 512
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
        return cls(
            token=get("TELEGRAM_TOKEN"),
            engine_url=engine_url,
            engine_public_url=(get("ENGINE_PUBLIC_URL") or engine_url).rstrip("/"),
            engine_admin_token=get("ENGINE_ADMIN_TOKEN"),
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
            user_rate_per_minute=int(get("USER_RATE_PER_MINUTE") or 20),
            user_burst=int(get("USER_BURST") or 5),
            telegram_max_retries=int(get("TELEGRAM_MAX_RETRIES") or 3),
            retrain=RetrainSettings(
                corpus=get("TRAIN_CORPUS"),
                format=get("TRAIN_FORMAT") or "flickr8k",
                weights=get("TRAIN_WEIGHTS"),
                models_dir=get("MODELS_DIR"),
                extra_args=tuple(shlex.split(get("TRAIN_ARGS") or "")),
                redis_url=redis_url,
            ),
        )


def parse_ids(text: str) -> frozenset[int]:
    """Parse a comma-separated list of Telegram user ids, ignoring blanks."""
    return frozenset(int(part) for part in text.replace(" ", "").split(",") if part)
