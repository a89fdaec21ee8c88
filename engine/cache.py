"""Answer cache: Redis (with a circuit breaker) or an in-process LRU, behind one small interface.

Values are the JSON bodies as bytes. Keys always include the bundle version, so a new bundle never
serves an old answer. A cache failure never fails a request: it only makes it uncached.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

KEY_PREFIX = "topicspace:engine:"


def cache_key(version: str, endpoint: str, *parts: object) -> str:
    """A bounded-length key: version and endpoint readable, the rest hashed."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).hexdigest()[:32]
    return f"{KEY_PREFIX}{version}:{endpoint}:{digest}"


class Cache(Protocol):
    """What the views need from a cache."""

    kind: str

    @property
    def up(self) -> bool:
        """Whether the backend is reachable right now."""
        ...

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None (miss or backend down)."""
        ...

    async def set(self, key: str, value: bytes) -> None:
        """Store ``value``; failures are swallowed."""
        ...

    def put(self, key: str, value: bytes) -> None:
        """Store ``value`` without waiting for the backend (a request need not wait for its answer to be
        cached); failures are swallowed."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


class LRUCache:
    """In-process LRU with a TTL: the fallback when no Redis URL is configured."""

    kind = "memory"

    def __init__(self, max_entries: int, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.clock = clock
        self.data: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    @property
    def up(self) -> bool:
        """Always reachable."""
        return True

    async def get(self, key: str) -> bytes | None:
        """The value if present and fresh."""
        entry = self.data.get(key)
        if entry is None:
            return None
        expires, value = entry
        if expires < self.clock():
            del self.data[key]
            return None
        self.data.move_to_end(key)
        return value

    async def set(self, key: str, value: bytes) -> None:
        """Insert, evicting the least recently used entry beyond the bound."""
        self.put(key, value)

    def put(self, key: str, value: bytes) -> None:
        """:meth:`set`, which never waits anyway."""
        self.data[key] = (self.clock() + self.ttl_s, value)
        self.data.move_to_end(key)
        while len(self.data) > self.max_entries:
            self.data.popitem(last=False)

    async def close(self) -> None:
        """Nothing to release."""
        self.data.clear()


class TieredCache:
    """A small in-process LRU in front of Redis: hot answers skip the network round trip.

    Safe because keys carry the bundle version (an answer never changes under its key); Redis still
    shares answers between engine processes and across restarts.
    """

    kind = "redis"

    def __init__(self, local: LRUCache, remote: RedisCache) -> None:
        self.local = local
        self.remote = remote

    @property
    def up(self) -> bool:
        """Whether Redis is reachable."""
        return self.remote.up

    async def get(self, key: str) -> bytes | None:
        """Local first, then Redis (copied into the local tier)."""
        value = await self.local.get(key)
        if value is None:
            value = await self.remote.get(key)
            if value is not None:
                await self.local.set(key, value)
        return value

    async def set(self, key: str, value: bytes) -> None:
        """Store in both tiers."""
        await self.local.set(key, value)
        await self.remote.set(key, value)

    def put(self, key: str, value: bytes) -> None:
        """In the local tier now; into Redis with the next batch."""
        self.local.put(key, value)
        self.remote.put(key, value)

    async def close(self) -> None:
        """Close both tiers."""
        await self.local.close()
        await self.remote.close()


class RedisCache:
    """Redis with short timeouts and a circuit breaker: while open, calls are skipped (uncached).

    Concurrent calls are batched: the GETs and SETs of all requests that reach the cache while a round
    trip is in flight (or in the same loop iteration) go out together as one pipeline, ``MGET`` plus the
    ``SET``s. One command per request cost ~0.1 ms of the loop's CPU in redis-py; a batch of 16 ~4x less.
    Each call still returns only once its own command has been answered (or has failed).
    """

    kind = "redis"

    def __init__(
        self,
        url: str,
        ttl_s: int,
        timeout_s: float = 0.25,
        retry_after_s: float = 3.0,
        on_state: Callable[[bool], None] | None = None,
    ) -> None:
        self.ttl_s = ttl_s
        self.retry_after_s = retry_after_s
        self.on_state = on_state
        self.client = aioredis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
            max_connections=256,
        )
        self._up = True
        self._open_until = 0.0
        # Calls waiting for the next batch: key → waiters (GET), key → (value, waiters) (SET).
        self._gets: dict[str, list[asyncio.Future[bytes | None]]] = {}
        self._sets: dict[str, tuple[bytes, list[asyncio.Future[bytes | None]]]] = {}
        self._sender: asyncio.Task[None] | None = None

    @property
    def up(self) -> bool:
        """False while the breaker is open."""
        return self._up

    def _available(self) -> bool:
        return self._up or time.monotonic() >= self._open_until

    def _failed(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + self.retry_after_s
        if self._up:
            self._up = False
            log.warning("redis unreachable (%s): answering uncached, retrying in %.0f s",
                        exc, self.retry_after_s)
            if self.on_state:
                self.on_state(False)

    def _succeeded(self) -> None:
        if not self._up:
            self._up = True
            log.info("redis reachable again: cache back on")
            if self.on_state:
                self.on_state(True)

    async def ping(self) -> bool:
        """Probe the server (at start-up); updates the breaker."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            self._failed(exc)
            return False
        self._succeeded()
        return True

    def _ensure_sender(self) -> asyncio.AbstractEventLoop:
        """Start the sender unless one is running (it takes what is queued next); the running loop."""
        loop = asyncio.get_running_loop()
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_batches(), name="engine-redis-batches")
        return loop

    def _enqueue(self) -> asyncio.Future[bytes | None]:
        """A future for one call, answered by the sender's next batch."""
        return self._ensure_sender().create_future()

    async def _send_batches(self) -> None:
        """Send what is queued as one pipeline, again and again until nothing is queued."""
        while self._gets or self._sets:
            gets, self._gets = self._gets, {}
            sets, self._sets = self._sets, {}
            values: list[bytes | None] = [None] * len(gets)
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, (value, _) in sets.items():  # first: a GET batched with a SET sees it
                        pipe.set(key, value, ex=self.ttl_s)
                    if gets:
                        pipe.mget(list(gets))
                    results = await pipe.execute()
                if gets:
                    values = [v if isinstance(v, bytes) else None for v in results[-1]]
                self._succeeded()
            except (RedisError, OSError) as exc:
                self._failed(exc)
            finally:  # also when cancelled at close: nobody waits forever
                for waiters, found in zip(gets.values(), values, strict=True):
                    for w in waiters:
                        if not w.done():
                            w.set_result(found)
                for _, waiters in sets.values():
                    for w in waiters:
                        if not w.done():
                            w.set_result(None)

    async def get(self, key: str) -> bytes | None:
        """The cached value, or None on a miss or while Redis is down."""
        if not self._available():
            return None
        future = self._enqueue()
        self._gets.setdefault(key, []).append(future)
        return await future

    async def set(self, key: str, value: bytes) -> None:
        """Store with the TTL; skipped while Redis is down."""
        if not self._available():
            return
        future = self._enqueue()
        self._queue_set(key, value).append(future)
        await future

    def put(self, key: str, value: bytes) -> None:
        """Queue a SET for the next batch and return at once; skipped while Redis is down."""
        if not self._available():
            return
        self._ensure_sender()
        self._queue_set(key, value)

    def _queue_set(self, key: str, value: bytes) -> list[asyncio.Future[bytes | None]]:
        """Queue ``value`` for ``key`` (the latest value wins); the waiters of that queued SET."""
        waiters = self._sets[key][1] if key in self._sets else []
        self._sets[key] = (value, waiters)
        return waiters

    async def close(self) -> None:
        """Finish the batch in flight, then close the connection pool."""
        if self._sender is not None and not self._sender.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._sender), timeout=1.0)
            except (TimeoutError, asyncio.CancelledError):
                self._sender.cancel()
        await self.client.aclose()
