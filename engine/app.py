"""The app factory: resources opened and closed by ``cleanup_ctx`` generators, stored under typed keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import AsyncIterator

from aiohttp import web

from engine import probes, views, webpage
from engine.bus import BundleBus
from engine.cache import Cache, LRUCache, RedisCache, TieredCache
from engine.keys import BUS, CACHE, METRICS, RUNTIME, SETTINGS
from engine.metrics import Metrics
from engine.middleware import observe
from engine.runtime import Runtime
from engine.settings import Settings
from space.errors import SpaceError

log = logging.getLogger(__name__)

__all__ = ["BUS", "CACHE", "METRICS", "RUNTIME", "SETTINGS", "create_app"]

async def runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    """Worker pool and model: first load, the ACTIVE poll, SIGHUP; all stopped at shutdown."""
    settings = app[SETTINGS]
    runtime = Runtime(settings, app[METRICS])
    app[RUNTIME] = runtime
    await runtime.check_active()
    if runtime.holder.current is None:
        log.warning("no valid bundle in %s: starting degraded (queries answer 503)", settings.models_dir)
    poller = asyncio.create_task(runtime.poll(), name="engine-active-poll")
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[None]] = set()
    hup = settings.handle_sighup and threading.current_thread() is threading.main_thread()
    if hup:
        def on_hup() -> None:
            log.info("SIGHUP: reloading the active bundle")
            task = loop.create_task(_quiet_reload(runtime))
            reloads.add(task)
            task.add_done_callback(reloads.discard)
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    yield
    if hup:
        loop.remove_signal_handler(signal.SIGHUP)
    poller.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await poller
    for task in list(reloads):
        task.cancel()
    await runtime.batcher.close()
    await loop.run_in_executor(None, runtime.close)


async def _quiet_reload(runtime: Runtime) -> None:
    with contextlib.suppress(SpaceError):
        await runtime.reload()


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """Redis (``cache_redis_url``, else ``redis_url``; probed, never fatal), else an in-process LRU."""
    settings = app[SETTINGS]
    metrics = app[METRICS]
    cache: Cache
    url = settings.cache_redis_url or settings.redis_url
    if url:
        redis_cache = RedisCache(
            url, settings.cache_ttl_s, settings.redis_timeout_s, settings.redis_retry_s,
            on_state=lambda up: metrics.redis_up.set(1 if up else 0),
        )
        up = await redis_cache.ping()
        metrics.redis_up.set(1 if up else 0)
        log.info("cache: redis (%s)", "up" if up else "down, retrying in the background")
        cache = redis_cache
        if settings.local_entries > 0:
            cache = TieredCache(LRUCache(settings.local_entries, settings.local_ttl_s), redis_cache)
    else:
        cache = LRUCache(settings.lru_entries, settings.cache_ttl_s)
        log.info("cache: in-process LRU (%d entries)", settings.lru_entries)
    app[CACHE] = cache
    yield
    await cache.close()


async def bus_ctx(app: web.Application) -> AsyncIterator[None]:
    """Replica announcements: subscribed in the background when ``redis_url`` is set (never fatal)."""
    settings = app[SETTINGS]
    bus = BundleBus(settings.redis_url, settings.bundle_channel, app[RUNTIME], app[METRICS],
                    retry_s=settings.redis_retry_s, origin=f"{settings.host}:{settings.port}")
    app[BUS] = bus
    listener = asyncio.create_task(bus.listen(), name="engine-bundle-bus")
    yield
    listener.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await listener
    await bus.close()


def create_app(settings: Settings) -> web.Application:
    """The engine's aiohttp application."""
    # Multipart framing adds a little to the image itself.
    middlewares = [observe] if settings.metrics_port is None else [observe, probes.metrics_not_public]
    app = web.Application(middlewares=middlewares,
                          client_max_size=settings.max_upload_bytes + views.FRAMING_BYTES)
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app.cleanup_ctx.append(cache_ctx)
    app.cleanup_ctx.append(runtime_ctx)
    app.cleanup_ctx.append(bus_ctx)
    app.cleanup_ctx.append(probes.metrics_listener)
    views.setup_routes(app)
    webpage.setup_routes(app)  # the web page at / and /v1/similar/{id}
    app.router.add_get("/readyz", probes.readyz)
    return app
