"""Readiness, and ``/metrics`` and the admin endpoints on an internal port.

``/healthz`` is liveness: 200 whenever the process answers, a bundle or not (a first deploy starts with
none, and the bot must start too, since ``/retrain`` from the bot is how it gets one). ``/readyz`` is
readiness, for load balancers and the operator: 503 ``no_bundle`` until a bundle is served, then 200.

With ``metrics_port`` set (``ENGINE_METRICS_PORT``; the compose deployment sets it and publishes only the
API port) ``/metrics`` and the admin endpoints (``/v1/admin/*``: reload, versions, activate) are served on
that port alone, by a second listener in each engine process, and the public port answers them 404: the
API stays public while the metrics and the bundle switches stay on the internal network (an admin token
guessed or leaked is no use from outside). Without it, both are on the API port as before.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from engine import views
from engine.keys import BUS, METRICS, RUNTIME, SETTINGS
from engine.middleware import observe  # the same JSON errors and request metrics as the API port

log = logging.getLogger(__name__)

METRICS_PATH = "/metrics"
ADMIN_PREFIX = "/v1/admin/"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def readyz(request: web.Request) -> web.Response:
    """Readiness: 200 with the served version once a bundle is served; 503 ``no_bundle`` before."""
    model = request.app[RUNTIME].holder.current
    if model is None:
        return web.json_response(
            {"error": "no_bundle", "message": "No bundle is served yet: publish one (python -m train all, "
             "or /retrain from the bot)."}, status=503)
    return web.json_response({"status": "ready", "version": model.version})


@web.middleware
async def metrics_not_public(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On the API port, ``/metrics`` and ``/v1/admin/*`` do not exist when they have their own port."""
    if request.path == METRICS_PATH or request.path.startswith(ADMIN_PREFIX):
        raise web.HTTPNotFound(text=f"{request.path[:100]} is served on the internal port only.")
    return await handler(request)


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """``cleanup_ctx``: ``/metrics`` and the admin endpoints on ``settings.metrics_port`` (SO_REUSEPORT:
    one port, every process)."""
    settings = app[SETTINGS]
    if settings.metrics_port is None:
        yield
        return

    side = web.Application(middlewares=[observe])
    side[METRICS] = app[METRICS]
    side[SETTINGS] = settings
    side[RUNTIME] = app[RUNTIME]
    side[BUS] = app[BUS]
    side.router.add_get(METRICS_PATH, views.metrics)
    views.setup_admin_routes(side)
    runner = web.AppRunner(side, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.metrics_port, reuse_port=True).start()
    except OSError as exc:
        await runner.cleanup()
        where = f"{settings.host}:{settings.metrics_port}"
        raise OSError(f"cannot serve {METRICS_PATH} on {where}: {exc}") from exc
    log.info("metrics and admin endpoints on %s:%d (internal)", settings.host, settings.metrics_port)
    yield
    await runner.cleanup()
