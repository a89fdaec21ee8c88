"""What the handlers share: the file_id cache, the per-user limiter, and the :class:`Services` bundle
through which a handler reaches them, the engine client, the retrain jobs, the examples and the inline
answers."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, cast

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
        self._lru: OrderedDict[str, str] = OrderedDict()
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
        value = self._lru.get(key)
        if value is not None:
            self._lru.move_to_end(key)
        return value

    async def set(self, key: str, file_id: str) -> None:
        """Remember a file_id."""
        if self._redis is not None:
            try:
                await self._redis.set(f"topicspace:fileid:{key}", file_id, ex=self.ttl_s)
                return
            except Exception as exc:  # fall back to memory, see get()
                log.warning("file_id cache write failed: %s", type(exc).__name__)
        self._lru[key] = file_id
        self._lru.move_to_end(key)
        while len(self._lru) > self.capacity:
            self._lru.popitem(last=False)

    async def close(self) -> None:
        """Close the Redis pool."""
        if self._redis is not None:
            await self._redis.aclose()


@dataclass
class UserRateLimiter:
    """A token bucket per user: ``burst`` requests at once, refilled at ``per_minute``."""

    per_minute: int = 20
    burst: int = 5
    _buckets: dict[int, tuple[float, float]] = field(default_factory=dict)

    def allow(self, user_id: int, now: float | None = None) -> bool:
        """Take one token for this user; False when the bucket is empty."""
        now = time.monotonic() if now is None else now
        tokens, last = self._buckets.get(user_id, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now)
            return False
        self._buckets[user_id] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:  # bound memory: forget the oldest users
            for key in list(self._buckets)[:10_000]:
                del self._buckets[key]
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
