"""Replicas: engines sharing one Redis announce bundle switches to each other over pub/sub.

An admin reload/activate on one replica publishes the version it now serves; every subscribed replica
loads it from the shared models dir with the same verify-or-refuse rules as a reload. The listener
reconnects by itself when Redis goes away, and on every (re)subscription re-reads ACTIVE, so a switch
made while it was deaf is not missed. The ACTIVE poll stays the fallback.

An announcement is followed only to the version ACTIVE names, or when it is signed with this replica's
admin token (``space.announce``): publishing on Redis cannot switch replicas to an arbitrary bundle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from engine.metrics import Metrics
from engine.runtime import Runtime
from space import bundle
from space.announce import Announcement, default_origin
from space.errors import SpaceError

log = logging.getLogger(__name__)

# How often a silent subscription checks its connection (a PING), in seconds.
HEALTH_CHECK_S = 5.0


class BundleBus:
    """Publishes this replica's switches and applies the others' (a no-op without a Redis URL)."""

    def __init__(
        self, url: str | None, channel: str, runtime: Runtime, metrics: Metrics,
        timeout_s: float = 1.0, retry_s: float = 3.0, origin: str | None = None,
    ) -> None:
        self.url = url
        self.channel = channel
        self.runtime = runtime
        self.metrics = metrics
        self.timeout_s = timeout_s
        self.retry_s = retry_s
        self.origin = origin or default_origin()
        self.up: bool | None = None  # None: not configured
        self.publisher = (
            aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                              retry=Retry(NoBackoff(), 1))
            if url else None
        )

    def _state(self, up: bool, reason: object = None) -> None:
        if up != self.up:
            if up:
                log.info("subscribed to bundle announcements on %s", self.channel)
            else:
                log.warning("bundle announcements unavailable (%s): retrying every %.1f s, polling ACTIVE "
                            "meanwhile", reason, self.retry_s)
        self.up = up
        self.metrics.bus_up.set(1 if up else 0)

    async def publish(self, version: str) -> int:
        """Tell the other replicas to serve ``version``; subscribers reached, or -1 (logged, never raised)."""
        if self.publisher is None:
            return -1
        message = Announcement(version, self.origin)
        token = self.runtime.settings.admin_token
        if token:
            message = message.signed(token)
        try:
            receivers = int(await self.publisher.publish(self.channel, message.encode()))
        except (RedisError, OSError) as exc:
            log.warning("could not announce bundle %s (%s): other replicas will poll ACTIVE", version, exc)
            return -1
        self.metrics.announcements.labels(direction="sent").inc()
        log.info("announced bundle %s to %d subscriber(s)", version, receivers)
        return receivers

    async def apply(self, data: bytes | str) -> None:
        """Serve the announced version (verified like any reload; a refused one leaves the current)."""
        message = Announcement.decode(data)
        if message is None:
            log.warning("ignoring a malformed bundle announcement: %r", data[:200])
            return
        self.metrics.announcements.labels(direction="received").inc()
        current = self.runtime.holder.current
        if current is not None and current.version == message.version:
            return
        active = bundle.active_version(self.runtime.settings.models_dir)
        if message.version != active and not message.verified(self.runtime.settings.admin_token):
            log.warning("ignoring an announcement of bundle %s by %s: not the ACTIVE bundle (%s) and not "
                        "signed with this replica's admin token", message.version[:100],
                        message.origin[:100] or "?", active)
            return
        log.info("bundle %s announced by %s: switching", message.version, message.origin or "?")
        try:
            await self.runtime.reload(message.version)
        except SpaceError as exc:  # refused (counted by reload) or unknown: the current bundle keeps serving
            log.warning("not switching to announced bundle %s: %s", message.version, exc)

    async def listen(self) -> None:
        """Subscribe and apply announcements forever, reconnecting when Redis goes away (cancel to stop)."""
        if self.url is None:
            return
        while True:
            client = aioredis.from_url(
                self.url, socket_connect_timeout=self.timeout_s, health_check_interval=HEALTH_CHECK_S,
                retry=Retry(NoBackoff(), 0),  # a lost connection comes back here, to catch up below
            )
            pubsub = client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._state(True)
                # Anything switched while this replica was deaf went through ACTIVE (activate writes it).
                await self.runtime.check_active(catch_up=True)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None and message.get("type") == "message":
                        await self.apply(message["data"])
            except (RedisError, OSError) as exc:
                self._state(False, exc)
            except Exception:  # never let the listener die: log and start over
                log.exception("bundle announcement listener failed")
                self._state(False, "listener error")
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                with contextlib.suppress(Exception):
                    await client.aclose()
            await asyncio.sleep(self.retry_s)

    async def close(self) -> None:
        """Release the publishing connection."""
        if self.publisher is not None:
            await self.publisher.aclose()
