"""Admin endpoints: list bundles and roll back by activating an older one."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from engine.app import create_app
from space import bundle
from tests.engine.helpers import TOKEN, make_settings, publish_copy

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_versions_and_rollback(aiohttp_client: Any, small_bundle: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    first = publish_copy(models, small_bundle)
    second = publish_copy(models, small_bundle)
    client = await aiohttp_client(create_app(make_settings(models)))
    assert (await client.get("/v1/admin/versions")).status == 401
    listing = await (await client.get("/v1/admin/versions", headers=AUTH)).json()
    assert listing["active"] == second and listing["served"] == second
    assert [v["version"] for v in listing["versions"]] == [second, first]
    assert listing["versions"][0]["kept"] is not None

    r = await client.post("/v1/admin/activate", params={"version": first}, headers=AUTH)
    assert r.status == 200, await r.text()
    assert (await r.json()) == {"version": first, "previous": second}
    assert bundle.active_version(models) == first  # survives an engine restart
    assert (await (await client.get("/v1/stats")).json())["version"] == first

    # Naming a version that does not exist is the client's mistake: a 404, not a 5xx the bot reads as busy.
    for bad in ("nope", "../x", ""):
        r = await client.post("/v1/admin/activate", params={"version": bad}, headers=AUTH)
        assert (r.status, (await r.json())["error"]) == (404, "unknown_version"), bad
    r = await client.post("/v1/admin/reload", params={"version": "nope"}, headers=AUTH)
    assert (r.status, (await r.json())["error"]) == (404, "unknown_version")
    assert bundle.active_version(models) == first


async def test_activate_refuses_a_corrupt_bundle(
    aiohttp_client: Any, small_bundle: Path, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    good = publish_copy(models, small_bundle)
    bad = publish_copy(models, small_bundle, activate_it=False)
    (models / bad / bundle.IMAGE_VECTORS).write_bytes(b"corrupt")
    client = await aiohttp_client(create_app(make_settings(models)))
    r = await client.post("/v1/admin/activate", params={"version": bad}, headers=AUTH)
    assert r.status == 503 and (await r.json())["error"] == "bundle_invalid"
    assert bundle.active_version(models) == good
    assert (await (await client.get("/v1/stats")).json())["version"] == good
    shutil.rmtree(models / bad)
