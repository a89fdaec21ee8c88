"""The answer cache on a real redis-server: hits, parity with the LRU, Redis dying and coming back."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from aiohttp.test_utils import TestClient

from engine.app import create_app
from engine.cache import LRUCache, RedisCache, TieredCache
from engine.keys import CACHE
from space import bundle
from tests.conftest import RedisServer
from tests.engine.helpers import make_settings
from tests.waiting import until


def _sample(text: str, line_prefix: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


async def _hits(client: TestClient, endpoint: str) -> float:
    text = await (await client.get("/metrics")).text()
    return _sample(text, f'engine_cache_hits_total{{endpoint="{endpoint}"}}')


async def _redis_up(client: TestClient) -> float:
    return _sample(await (await client.get("/metrics")).text(), "engine_redis_up ")


QUERIES = [("/v1/related", {"q": "dog", "k": "6"}), ("/v1/images", {"q": "beach -dog", "k": "5"}),
           ("/v1/images", {"q": "red shirt", "k": "3", "offset": "2"}), ("/v1/related", {"q": "zzqx"})]


async def _stored(url: str, at_least: int, timeout: float = 60.0) -> int:
    """How many answers Redis holds, waiting (on the loop, so the engine's batch can go out) for
    ``at_least``: an answer is stored after its response has left (``Cache.put``)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        n = len(redis.Redis.from_url(url).keys("topicspace:engine:*"))
        if n >= at_least or asyncio.get_running_loop().time() > deadline:
            return n
        await asyncio.sleep(0.02)


async def test_redis_hits_and_parity_with_lru(
    aiohttp_client: Any, small_bundle_models: Path, small_bundle: Path, redis_server: RedisServer
) -> None:
    settings = make_settings(small_bundle_models, redis_url=redis_server.url, local_entries=0)
    with_redis = await aiohttp_client(create_app(settings))
    in_process = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    assert (await (await with_redis.get("/healthz")).json())["cache"] == "redis"
    photo = Path(json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"][3]["path"]).read_bytes()
    for _ in range(2):  # the second round is served from each cache
        for path, params in QUERIES:
            a = await with_redis.get(path, params=params)
            b = await in_process.get(path, params=params)
            assert a.status == b.status == 200
            assert await a.json() == await b.json()
        a = await with_redis.post("/v1/hashtags", data=photo)
        b = await in_process.post("/v1/hashtags", data=photo)
        assert await a.json() == await b.json()
    assert await _hits(with_redis, "images") == 2
    assert await _hits(with_redis, "hashtags") == 1
    assert await _hits(in_process, "related") == 2
    assert await _stored(redis_server.url, len(QUERIES) + 1) == len(QUERIES) + 1
    keys = redis.Redis.from_url(redis_server.url).keys("topicspace:engine:*")
    version = bundle.read_manifest(small_bundle)["version"]
    assert len(keys) == len(QUERIES) + 1 and all(version.encode() in k for k in keys)
    assert await _redis_up(with_redis) == 1


async def test_redis_dies_and_comes_back(
    aiohttp_client: Any, small_bundle_models: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(small_bundle_models, redis_url=redis_server.url, local_entries=0)
    client = await aiohttp_client(create_app(settings))
    params = {"q": "girl", "k": "4"}
    first = await (await client.get("/v1/images", params=params)).json()
    await client.get("/v1/images", params=params)
    assert await _hits(client, "images") == 1

    cache = client.app[CACHE]
    assert isinstance(cache, RedisCache)
    failures: list[float] = []
    failed = cache._failed

    def counted(exc: BaseException) -> None:
        failures.append(time.monotonic())
        failed(exc)

    monkeypatch.setattr(cache, "_failed", counted)
    redis_server.stop()
    loop = asyncio.get_running_loop()
    started = loop.time()
    for i in range(30):  # repeated and fresh queries, all answered uncached
        r = await client.get("/v1/images", params=params if i % 2 else {"q": f"girl dog {i}", "k": "4"})
        assert r.status == 200
    assert (await (await client.get("/v1/images", params=params)).json()) == first
    # No stalls, whatever the machine's speed: the breaker lets one round trip fail per retry window (plus
    # the batch in flight when Redis died), not one per request.
    windows = 1 + int((loop.time() - started) / settings.redis_retry_s)
    assert 1 <= len(failures) <= windows + 1, (len(failures), windows)
    assert await _hits(client, "images") == 1
    health = await (await client.get("/healthz")).json()
    assert health["cache_up"] is False and health["status"] == "ok"
    assert await _redis_up(client) == 0

    redis_server.start()  # same port, empty

    async def cached_again() -> bool:
        r = await client.get("/v1/images", params=params)
        assert r.status == 200
        return await _hits(client, "images") > 1

    await until(cached_again, "the cache used again after Redis came back", every=0.2)
    assert await _redis_up(client) == 1
    assert (await (await client.get("/healthz")).json())["cache_up"] is True


async def test_local_tier_and_sharing_between_processes(
    aiohttp_client: Any, small_bundle_models: Path, redis_server: RedisServer
) -> None:
    settings = make_settings(small_bundle_models, redis_url=redis_server.url)  # local tier on
    first = await aiohttp_client(create_app(settings))
    params = {"q": "water", "k": "5"}
    answer = await (await first.get("/v1/images", params=params)).json()
    assert await _stored(redis_server.url, 1) == 1
    redis_server.stop()
    r = await first.get("/v1/images", params=params)  # served by the local tier while Redis is down
    assert r.status == 200 and await r.json() == answer and await _hits(first, "images") == 1
    redis_server.start()
    await first.get("/v1/images", params={"q": "snow", "k": "5"})
    second = await aiohttp_client(create_app(settings))  # another engine process, same Redis
    tiers = first.app[CACHE]
    assert isinstance(tiers, TieredCache)
    await until(tiers.remote._available, "the first one's breaker to let calls through again")
    await first.get("/v1/images", params={"q": "snow dog", "k": "5"})
    assert await _stored(redis_server.url, 1) >= 1
    r = await second.get("/v1/images", params={"q": "snow dog", "k": "5"})
    assert r.status == 200 and await _hits(second, "images") == 1


async def test_lru_bounds_and_ttl() -> None:
    now = [0.0]
    cache = LRUCache(max_entries=2, ttl_s=10, clock=lambda: now[0])
    await cache.set("a", b"1")
    await cache.set("b", b"2")
    assert await cache.get("a") == b"1"  # a is now most recent
    await cache.set("c", b"3")
    assert await cache.get("b") is None and await cache.get("a") == b"1" and await cache.get("c") == b"3"
    now[0] = 11.0
    assert await cache.get("a") is None
