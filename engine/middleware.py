"""The middleware of every port: each request counted and timed, and every error answered in one JSON shape.

Domain errors (:class:`space.errors.SpaceError`) and aiohttp's own 4xx keep their status; anything else is
a bug, logged with its traceback and answered 500 ``internal`` in the same shape.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.keys import METRICS
from space.errors import SpaceError, UnknownWords

log = logging.getLogger(__name__)

# aiohttp's own 4xx, as error codes.
HTTP_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, code: str, message: str, **extra: object) -> web.Response:
    """The one JSON error shape."""
    return web.json_response({"error": code, "message": message, **extra}, status=status)


def _endpoint(request: web.Request) -> str:
    route = request.match_info.route
    resource = route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count and time every request, and map domain/aiohttp errors to the JSON error body."""
    metrics = request.app[METRICS]
    started = time.perf_counter()
    endpoint = _endpoint(request)
    try:
        response = await handler(request)
    except SpaceError as exc:
        extra = {"unknown": exc.unknown} if isinstance(exc, UnknownWords) else {}
        response = error_response(exc.status, exc.code, str(exc), **extra)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = HTTP_CODES.get(exc.status, "http_error")
        response = error_response(exc.status, code, exc.reason if exc.text is None else exc.text)
    except Exception:  # a real bug: logged with its traceback, answered in the same JSON shape
        log.exception("unhandled error on %s %s", request.method, request.path)
        response = error_response(500, "internal", "Internal error; it has been logged.")
    metrics.observe(endpoint, response.status, time.perf_counter() - started)
    return response


