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
    """Image key → Telegram file_id, in Redis when configured (shared, survives restarts), else an LRU.

    A slow or unreachable Redis costs one short timeout, not one per picture: the keys of an answer go in
    one ``MGET`` (:meth:`get_many`), and after a failure a breaker sends every call to the in-process LRU
    for ``retry_after_s`` (before: 2 s timeouts awaited one after another, ~20 s for an inline page of 10,
    past Telegram's deadline for an inline answer).
    """

    def __init__(
        self, redis_url: str | None = None, capacity: int = 4096, ttl_s: int = 30 * 24 * 3600,
        timeout_s: float = 0.5, retry_after_s: float = 30.0,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self._lru: LRUCache[str, str] = LRUCache(maxsize=capacity)
        self._redis = None
        self._closed_until = 0.0  # the breaker: Redis is skipped until then
        self.failures = 0
        if redis_url:
            import redis.asyncio as aioredis

            self._redis = aioredis.from_url(redis_url, socket_timeout=timeout_s,
                                            socket_connect_timeout=timeout_s)

    def _usable(self) -> bool:
        return self._redis is not None and time.monotonic() >= self._closed_until

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        self._closed_until = time.monotonic() + self.retry_after_s
        log.warning("file_id cache %s failed (%s): memory only for %.0f s", what, type(exc).__name__,
                    self.retry_after_s)

    async def get(self, key: str) -> str | None:
        """The cached file_id, or None."""
        return (await self.get_many([key])).get(key)

    async def get_many(self, keys: list[str]) -> dict[str, str]:
        """The cached file_ids of ``keys`` (those it has), in one round trip."""
        found: dict[str, str] = {}
        if keys and self._redis is not None and self._usable():
            try:
                raw = await self._redis.mget([f"topicspace:fileid:{k}" for k in keys])
                found = {k: v.decode() if isinstance(v, bytes) else str(v)
                         for k, v in zip(keys, raw, strict=True) if v is not None}
            except Exception as exc:  # a cache outage must not break answers
                self._failed("read", exc)
        for key in keys:
            value = self._lru.get(key)  # a read counts as a use: the LRU keeps what answers need
            if value is not None:
                found.setdefault(key, value)
        return found

    async def set(self, key: str, file_id: str) -> None:
        """Remember a file_id (in memory too: the next read needs no Redis)."""
        if self._redis is not None and self._usable():
            try:
                await self._redis.set(f"topicspace:fileid:{key}", file_id, ex=self.ttl_s)
            except Exception as exc:  # fall back to memory, see get()
                self._failed("write", exc)
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

    A refused user is told once per streak of refusals (:meth:`warn`), not once per message: each
    "slow down" is a message the bot sends, out of its own global sending budget, so answering every
    message of a flood would let the flooder spend that budget.
    """

    def __init__(self, per_minute: int = 20, burst: int = 5, users: int = 100_000) -> None:
        self.per_minute = per_minute
        self.burst = burst
        # user → (tokens, last refill time, told to slow down since the last allowed request)
        self._buckets: LRUCache[int, tuple[float, float, bool]] = LRUCache(maxsize=users)

    def allow(self, user_id: int, now: float | None = None) -> bool:
        """Take one token for this user; False when the bucket is empty."""
        now = time.monotonic() if now is None else now
        tokens, last, warned = self._buckets.get(user_id, (float(self.burst), now, False))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_minute / 60.0)
        if tokens < 1.0:
            self._buckets[user_id] = (tokens, now, warned)
            return False
        self._buckets[user_id] = (tokens - 1.0, now, False)
        return True

    def warn(self, user_id: int) -> bool:
        """After a refusal: whether to tell the user (the first refusal since their last allowed request)."""
        tokens, last, warned = self._buckets.get(user_id, (0.0, time.monotonic(), False))
        self._buckets[user_id] = (tokens, last, True)
        return not warned


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
