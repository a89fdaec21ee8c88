"""Liveness and readiness apart, and /metrics kept on an internal port while the API stays public."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from engine.app import create_app
from space import bundle
from space.version import __version__
from tests.conftest import free_port
from tests.engine.helpers import make_settings, publish_copy


async def test_ready_only_once_a_bundle_is_served(aiohttp_client: Any, tmp_path: Path,
                                                 small_bundle: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    client = await aiohttp_client(create_app(make_settings(models)))
    # A first deploy: alive (the bot may start and /retrain), not ready (no bundle to answer with).
    health = await client.get("/healthz")
    assert health.status == 200 and (await health.json())["status"] == "degraded"
    # The software's version beside the bundle's (issue 25), and the trainer's manifest carries it too.
    assert (await health.json())["topicspace_version"] == __version__
    assert bundle.read_manifest(small_bundle)["topicspace_version"] == __version__
    ready = await client.get("/readyz")
    assert ready.status == 503 and (await ready.json())["error"] == "no_bundle"
    version = publish_copy(models, small_bundle)
    for _ in range(100):  # the ACTIVE poll (0.2 s in tests) picks it up
        ready = await client.get("/readyz")
        if ready.status == 200:
            break
        await asyncio.sleep(0.1)
    assert ready.status == 200 and await ready.json() == {"status": "ready", "version": version}
    assert bundle.active_version(models) == version


async def test_metrics_on_their_own_port(aiohttp_client: Any, small_bundle_models: Path) -> None:
    port = free_port()
    client = await aiohttp_client(create_app(make_settings(small_bundle_models, metrics_port=port)))
    assert (await client.get("/v1/related", params={"q": "dog"})).status == 200
    public = await client.get("/metrics")
    assert public.status == 404 and (await public.json())["error"] == "not_found"
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    assert r.status == 200 and 'engine_requests_total{endpoint="/v1/related",status="200"}' in text
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/v1/stats") as r:
        assert r.status == 404  # the internal port serves the metrics only
    # Without a metrics port, /metrics stays where it was.
    plain = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    assert (await plain.get("/metrics")).status == 200
