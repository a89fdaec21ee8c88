"""Typed application keys under which the app stores its resources."""

from __future__ import annotations

from aiohttp import web

from engine.bus import BundleBus
from engine.cache import Cache
from engine.metrics import Metrics
from engine.runtime import Runtime
from engine.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
METRICS = web.AppKey("metrics", Metrics)
RUNTIME = web.AppKey("runtime", Runtime)
CACHE = web.AppKey("cache", Cache)
BUS = web.AppKey("bus", BundleBus)
