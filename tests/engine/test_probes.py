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
from tests.engine.helpers import TOKEN, make_settings, publish_copy


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


async def test_admin_endpoints_only_on_the_internal_port(aiohttp_client: Any,
                                                         small_bundle_models: Path) -> None:
    """Issue 28: the admin endpoints were on the public API port, where anyone may try tokens."""
    port = free_port()
    client = await aiohttp_client(create_app(make_settings(small_bundle_models, metrics_port=port)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, path in (("POST", "/v1/admin/reload"), ("GET", "/v1/admin/versions"),
                         ("POST", "/v1/admin/activate?version=x")):
        public = await client.request(method, path, headers=auth)
        assert public.status == 404 and (await public.json())["error"] == "not_found", path
    async with aiohttp.ClientSession() as session:
        internal = f"http://127.0.0.1:{port}"
        async with session.get(f"{internal}/v1/admin/versions", headers=auth) as r:
            assert r.status == 200 and (await r.json())["served"]
        async with session.post(f"{internal}/v1/admin/reload", headers=auth) as r:
            assert r.status == 200 and (await r.json())["version"]
        async with session.post(f"{internal}/v1/admin/reload") as r:  # the token is still required
            assert r.status == 401 and (await r.json())["error"] == "unauthorized"
        async with session.post(f"{internal}/v1/admin/activate?version=nope", headers=auth) as r:
            assert r.status == 404 and (await r.json())["error"] == "unknown_version"
