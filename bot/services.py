"""What the handlers share: the file_id cache, the per-user limiter, and the :class:`Services` bundle
through which a handler reaches them, the engine client, the retrain jobs, the examples and the inline
answers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, cast

from cachetools import LRUCache
from telegram.ext import Application, CallbackContext

from bot.engine_client import EngineClient
from bot.examples import ExampleBook
from bot.inline_memory import InlineMemory
from bot.retrain import ArqRetrainManager, RetrainManager
from bot.settings import BotSettings

log = logging.getLogger(__name__)

SERVICES = "services"  # the key of the Services in application.bot_data


class FileIdCache:
    """Image key → Telegram file_id, in Redis when configured (shared, survives restarts), else an LRU."""

    def __init__(
        self, redis_url: str | None = None, capacity: int = 4096, ttl_s: int = 30 * 24 * 3600
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._lru: LRUCache[str, str] = LRUCache(maxsize=capacity)
        self._redis = None
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)

    async def get(self, key: str) -> str | None:
        """The cached file_id, or None."""
        if self._redis is not None:
            try:
                raw = await self._redis.get(f"topicspace:fileid:{key}")
                return raw.decode() if isinstance(raw, bytes) else raw
            except Exception as exc:  # a cache outage must not break answers
                log.warning("file_id cache read failed: %s", type(exc).__name__)
        return self._lru.get(key)

    async def set(self, key: str, file_id: str) -> None:
        """Remember a file_id."""
        if self._redis is not None:
            try:
                await self._redis.set(f"topicspace:fileid:{key}", file_id, ex=self.ttl_s)
                return
            except Exception as exc:  # fall back to memory, see get()
                log.warning("file_id cache write failed: %s", type(exc).__name__)
        self._lru[key] = file_id

    async def close(self) -> None:
        """Close the Redis pool."""
        if self._redis is not None:
            await self._redis.aclose()


class UserRateLimiter:
    """A token bucket per user: ``burst`` requests at once, refilled at ``per_minute``.

    At most ``users`` buckets are kept (memory stays bounded however many people write): beyond that
    the least recently seen user's bucket is forgotten, which costs that user nothing (a new bucket is
    full), while an active user's empty bucket is never the one dropped.
    """

    def __init__(self, per_minute: int = 20, burst: int = 5, users: int = 100_000) -> None:
        self.per_minute = per_minute
        self.burst = burst
        self._buckets: LRUCache[int, tuple[float, float]] = LRUCache(maxsize=users)

    def allow(self, user_id: int, now: float | None = None) -> bool:
        """Take one token for this user; False when the bucket is empty."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(user_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now)
            return False
        self._buckets[user_id] = (tokens - 1.0, now)
        return True


@dataclass
class Services:
    """What the handlers share, opened in post_init and closed in post_shutdown."""

    settings: BotSettings
    engine: EngineClient
    file_ids: FileIdCache
    limiter: UserRateLimiter
    retrain: RetrainManager | ArqRetrainManager
    examples: ExampleBook = field(default_factory=ExampleBook)
    inline: InlineMemory = field(default_factory=InlineMemory)


def application_services(application: Application) -> Services:
    """The shared services of an application."""
    return cast(Services, application.bot_data[SERVICES])


def services(context: CallbackContext[Any, Any, Any, Any]) -> Services:
    """The shared services of the application handling this update."""
    return application_services(context.application)
