"""Bundle swaps: under load with zero failed requests, corrupt bundles refused, degraded start-up."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from engine.app import create_app
from engine.keys import RUNTIME
from space import bundle
from tests.engine.helpers import TOKEN, make_settings, png_bytes, publish_copy
from tests.waiting import until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _version(client: TestClient) -> str | None:
    return (await (await client.get("/healthz")).json())["version"]


async def _wait_version(client: TestClient, version: str, timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await _version(client) != version:
        assert loop.time() < deadline, f"version {version} never served"
        await asyncio.sleep(0.05)


async def _wait_refused(client: TestClient, version: str, timeout: float = 60.0) -> dict[str, Any]:
    """Wait until the engine has tried ``version`` and refused it; return the admin listing (its reason)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        listing: dict[str, Any] = await (await client.get("/v1/admin/versions", headers=AUTH)).json()
        if version in (listing["last_error"] or ""):
            health = await (await client.get("/healthz")).json()
            assert "last_error" not in health and version not in json.dumps(health)  # not for everyone
            return listing
        assert loop.time() < deadline, f"{version} was never refused: {listing}"
        await asyncio.sleep(0.05)


async def test_reload_under_load_drops_nothing(aiohttp_client: Any, models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(models)))
    old = await _version(client)
    old_model = client.app[RUNTIME].holder.current
    photo = png_bytes((300, 200))
    failures: list[str] = []
    versions_seen: list[str] = []
    after_reload: list[str] = []  # versions answering requests that started once the reload had returned
    reloaded_at = float("inf")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def worker(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            started = loop.time()
            if i % 4 == 3:
                r = await client.post("/v1/hashtags", params={"k": str(1 + n % 9)}, data=photo)
            elif i % 2:
                r = await client.get("/v1/images", params={"q": f"dog beach {i}", "k": str(1 + n % 20)})
            else:
                r = await client.get("/v1/related", params={"q": "girl -boy", "k": str(1 + n % 20)})
            body = await r.json()
            if r.status != 200:
                failures.append(f"{r.status} {body}")
            else:
                versions_seen.append(body["version"])
                if started > reloaded_at:
                    after_reload.append(body["version"])

    def answered(n: int) -> Callable[[], bool]:
        return lambda: len(versions_seen) >= n or bool(failures)

    tasks = [asyncio.create_task(worker(i)) for i in range(32)]
    await until(answered(20), "answers under load")
    new = await asyncio.to_thread(publish_copy, models, models / str(old))  # activates it: the poll swaps
    await _wait_version(client, new)
    await until(answered(len(versions_seen) + 20), "answers under load after the swap")
    # and back again through the admin endpoint, still under load
    r = await client.post("/v1/admin/reload", params={"version": old}, headers=AUTH)
    assert r.status == 200 and (await r.json()) == {"version": old, "previous": new}
    reloaded_at = loop.time()
    await until(lambda: len(after_reload) >= 20 or bool(failures), "answers started after the reload")
    stop.set()
    await asyncio.gather(*tasks)
    assert failures == []
    assert len(versions_seen) > 50
    # Completion order is not start order (a photo batch started before the reload may end after it).
    assert new in versions_seen and after_reload and set(after_reload) == {old}
    assert old_model is not None and old_model.closed  # the first model object was retired and closed
    assert client.app[RUNTIME].holder.current.version == old
    gone = weakref.ref(old_model)
    del old_model
    gc.collect()
    assert gone() is None, "a retired model is still referenced (memory would grow with every reload)"


async def test_corrupt_bundles_refused(aiohttp_client: Any, models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(models)))
    good = await _version(client)
    assert good is not None
    expected = await (await client.get("/v1/images", params={"q": "dog", "k": "5"})).json()

    bad_sha = publish_copy(models, models / good, activate_it=False, with_indexes=False)
    with (models / bad_sha / "words.npy").open("r+b") as f:
        f.seek(200)
        f.write(b"\x13\x37")
    truncated = publish_copy(models, models / good, activate_it=False, with_indexes=True)
    index = models / truncated / bundle.IMAGE_INDEX
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])

    for version in (bad_sha, truncated):
        # bundle.activate refuses them now (tests/space/test_bundle.py): point ACTIVE at each by hand, as
        # an operator might, so that the poll sees it and must refuse it.
        (models / bundle.ACTIVE).write_text(version + "\n", encoding="utf-8")
        listing = await _wait_refused(client, version)
        assert "sha256" in listing["last_error"]
        assert await _version(client) == good
        r = await client.get("/v1/images", params={"q": "dog", "k": "5"})
        assert r.status == 200 and await r.json() == expected
        r = await client.post("/v1/admin/reload", params={"version": version}, headers=AUTH)
        assert r.status == 503 and (await r.json())["error"] == "bundle_invalid"
    text = await (await client.get("/metrics")).text()
    assert 'engine_reloads_total{result="refused"} 4.0' in text
    assert f'engine_bundle_info{{version="{good}"}} 1.0' in text


async def test_bundle_without_indexes_matches_indexed(aiohttp_client: Any, models: Path) -> None:
    # The trainer's bundles ship indexes: serve a copy without them (built in memory).
    plain = publish_copy(models, bundle.active_path(models), with_indexes=False)
    client = await aiohttp_client(create_app(make_settings(models)))
    assert await _version(client) == plain
    assert not (models / str(plain) / bundle.IMAGE_INDEX).exists()  # built in memory
    params = {"q": "man bike", "k": "8"}
    a = await (await client.get("/v1/images", params=params)).json()
    indexed = publish_copy(models, models / str(plain), with_indexes=True)
    assert (models / indexed / bundle.IMAGE_INDEX).is_file()
    await _wait_version(client, indexed)
    b = await (await client.get("/v1/images", params=params)).json()
    assert b["version"] == indexed
    assert [(h["id"], h["score"]) for h in a["images"]] == [(h["id"], h["score"]) for h in b["images"]]


async def test_degraded_start_then_bundle_appears(
    aiohttp_client: Any, tmp_path: Path, small_bundle: Path
) -> None:
    models = tmp_path / "empty-models"
    models.mkdir()
    client = await aiohttp_client(create_app(make_settings(models)))
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "degraded" and health["version"] is None
    for path in ("/v1/related?q=dog", "/v1/images?q=dog", "/v1/stats", "/v1/images/x.jpg"):
        r = await client.get(path)
        assert r.status == 503 and (await r.json())["error"] == "no_bundle", path
    r = await client.post("/v1/hashtags", data=png_bytes())
    assert r.status == 503
    version = publish_copy(models, small_bundle)
    await _wait_version(client, version)
    r = await client.get("/v1/related", params={"q": "dog"})
    assert r.status == 200 and (await r.json())["words"]
    manifest = json.loads((models / version / bundle.MANIFEST).read_text())
    assert manifest["version"] == version


async def test_busy_when_queue_full(aiohttp_client: Any, small_bundle_models: Path) -> None:
    settings = make_settings(small_bundle_models, image_workers=1, image_queue_limit=2)
    client = await aiohttp_client(create_app(settings))
    photo = png_bytes((1200, 900))
    photos = [asyncio.ensure_future(client.post("/v1/hashtags", params={"k": str(k)}, data=photo))
              for k in range(1, 25)]
    await until(lambda: any(p.done() for p in photos), "the photo flood (its first answers: busy)")
    # text queries have their own pool: a photo flood does not make them wait or fail
    texts = await asyncio.gather(*(client.get("/v1/related", params={"q": "dog", "k": str(k)})
                                   for k in range(1, 9)))
    assert [r.status for r in texts] == [200] * 8
    rs = await asyncio.gather(*photos)
    statuses = [r.status for r in rs]
    assert set(statuses) <= {200, 503} and 200 in statuses and 503 in statuses
    busy = [await r.json() for r in rs if r.status == 503]
    assert all(b["error"] == "busy" for b in busy)
    assert (await client.get("/healthz")).status == 200



async def test_a_swap_frees_the_model_of_the_last_photo(aiohttp_client: Any, models: Path) -> None:
    """The photo batcher holds no retired model: a bundle's memory goes with the swap, not with the next photo
    (its dispatcher kept its last batch, and through it the model, while it waited for more photos); and a
    bundle of the same vocabulary keeps the spelling index."""
    client = await aiohttp_client(create_app(make_settings(models)))
    runtime = client.app[RUNTIME]
    first = runtime.holder.current
    assert first is not None
    photo = Path(json.loads((first.path / bundle.IMAGE_META).read_text())["items"][0]["path"]).read_bytes()
    assert (await client.post("/v1/hashtags", data=photo)).status == 200
    speller = first.space.speller
    gone = weakref.ref(first)
    del first
    new = await asyncio.to_thread(publish_copy, models, bundle.active_path(models), activate_it=False)
    assert (await client.post("/v1/admin/reload", params={"version": new}, headers=AUTH)).status == 200
    gc.collect()
    assert gone() is None, "the retired model is still referenced after the swap"
    assert (await client.get("/v1/related", params={"q": "dogg"})).status == 200
    # The same vocabulary (a bundle trained again on the same corpus): the spelling index is kept.
    assert runtime.holder.require().space.speller is speller


async def test_a_corrupt_active_bundle_at_start_serves_the_newest_valid_one(aiohttp_client: Any,
                                                                              models: Path) -> None:
    """Issue 28: an engine whose ACTIVE bundle is corrupt started degraded (503 for every query) although a
    good bundle was published beside it."""
    good = bundle.active_version(models)
    assert good is not None
    newer_good = publish_copy(models, models / good, activate_it=False)
    corrupt = publish_copy(models, models / good, activate_it=True, with_indexes=False)
    with (models / corrupt / "words.npy").open("r+b") as f:
        f.seek(200)
        f.write(b"\x13\x37")
    client = await aiohttp_client(create_app(make_settings(models)))
    assert await _version(client) == newer_good  # the newest that loads, not the first, not none
    r = await client.get("/v1/related", params={"q": "dog"})
    assert r.status == 200 and (await r.json())["version"] == newer_good
    assert bundle.active_version(models) == corrupt  # ACTIVE is the trainer's and admin's word: unchanged
    listing = await (await client.get("/v1/admin/versions", headers=AUTH)).json()
    assert corrupt in listing["last_error"] and "sha256" in listing["last_error"]
    # A good bundle made ACTIVE later is served as usual.
    fixed = publish_copy(models, models / good)
    await _wait_version(client, fixed)
