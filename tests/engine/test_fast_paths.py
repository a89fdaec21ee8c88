"""The uncached text fast paths: pre-encoded bodies, queries on the loop, batched Redis, one BLAS thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from engine import service
from engine.app import RUNTIME, create_app
from engine.cache import RedisCache
from engine.model import json_around_score, load_model
from space.query import parse_query
from tests.conftest import ROOT, RedisServer
from tests.engine.helpers import make_settings

QUERIES = ["dog", "dog -grass", "red shirt girl", "zzqx dog", "zzqx", "-dog", "beach water -zzqx", "man bike"]


def test_json_around_score_is_json_dumps() -> None:
    template = {"id": 'a"b\\c', "score": 0.0, "caption": "niño ☃ \n", "url": "/v1/images/a%22b", "lang": None}
    head, tail = json_around_score(template)
    for score in (0.1234, -0.5, 1.0, 0.0, 1e-05):
        expected = json.dumps({**template, "score": score}, ensure_ascii=False)
        assert head + repr(score) + tail == expected
    assert json_around_score({"word": "café", "score": 0.0}) == ('{"word": "café", "score": ', "}")


def test_bodies_are_byte_identical_to_json_dumps(small_bundle: Path) -> None:
    model = load_model(small_bundle)
    n = len(model.items)
    lang = next(iter(model.langs), "en")
    checked = 0
    for text in QUERIES:
        query = parse_query(text)
        for k, offset, language in ((1, 0, None), (7, 3, None), (n + 5, 0, None), (5, 0, lang), (5, 0, "xx")):
            body = service.images_body(model, query, k, offset, language, 0.5)
            assert body == json.dumps(service.images(model, query, k, offset, language, 0.5),
                                      ensure_ascii=False).encode("utf-8"), (text, k, offset, language)
            checked += 1
        for k in (1, 10, len(model.space.words) + 3):
            body = service.related_body(model, query, k)
            assert body == json.dumps(service.related(model, query, k), ensure_ascii=False).encode("utf-8")
    answer = json.loads(service.images_body(model, parse_query("dog"), 5, 0, None, 0.5))
    assert len(answer["images"]) == 5 and answer["unknown"] == [] and checked == 5 * len(QUERIES)


async def test_loop_and_pool_answer_the_same(aiohttp_client: Any, small_bundle_models: Path) -> None:
    on_loop = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    in_pool = await aiohttp_client(create_app(make_settings(small_bundle_models, inline_max_rows=0)))
    for text in QUERIES:
        for path, params in (("/v1/images", {"q": text, "k": "6", "offset": "1"}),
                             ("/v1/images", {"q": text, "k": "4", "lang": "en"}),
                             ("/v1/related", {"q": text, "k": "5"})):
            a = await on_loop.get(path, params=params)
            b = await in_pool.get(path, params=params)
            assert a.status == b.status == 200
            assert await a.read() == await b.read()
    # The unfiltered queries never touched the text pool of the first app; the filtered ones did.
    assert on_loop.app[RUNTIME].text.executor._threads  # the lang= queries
    plain = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    for text in QUERIES:
        assert (await plain.get("/v1/images", params={"q": text, "k": "9"})).status == 200
        assert (await plain.get("/v1/related", params={"q": text})).status == 200
    assert not plain.app[RUNTIME].text.executor._threads
    assert in_pool.app[RUNTIME].text.executor._threads


async def test_redis_calls_of_concurrent_requests_share_round_trips(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, ttl_s=60)
    calls = 0
    pipeline = cache.client.pipeline

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return pipeline(*args, **kwargs)

    cache.client.pipeline = counting  # type: ignore[method-assign]
    try:
        keys = [f"topicspace:engine:test:{i}" for i in range(64)]
        await asyncio.gather(*(cache.set(k, k.encode()) for k in keys))
        assert calls <= 2, calls
        wanted = [*keys, "topicspace:engine:test:none", keys[0]]
        values = await asyncio.gather(*(cache.get(k) for k in wanted))
        assert values == [k.encode() for k in keys] + [None, keys[0].encode()]
        assert calls <= 4, calls
        # A get batched with a set of the same key sees the value (the pipeline sends the SETs first).
        x = "topicspace:engine:test:x"
        assert await asyncio.gather(cache.set(x, b"1"), cache.get(x)) == [None, b"1"]
        assert cache.up
    finally:
        await cache.close()


async def test_redis_batches_fail_soft(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, ttl_s=60, timeout_s=0.2, retry_after_s=0.3)
    try:
        await cache.set("topicspace:engine:test:y", b"2")
        redis_server.stop()
        values = await asyncio.wait_for(asyncio.gather(*(cache.get(f"k{i}") for i in range(20)),
                                                       cache.set("k", b"v")), timeout=5)
        assert values == [None] * 21 and not cache.up
        redis_server.start()
        await asyncio.sleep(0.35)
        for _ in range(20):
            await cache.set("topicspace:engine:test:y", b"3")
            if cache.up:
                break
            await asyncio.sleep(0.1)
        assert cache.up and await cache.get("topicspace:engine:test:y") == b"3"
    finally:
        await cache.close()


def test_engine_process_uses_one_blas_thread() -> None:
    pytest.importorskip("threadpoolctl")
    code = ("import engine.__main__, numpy\n"
            "from threadpoolctl import threadpool_info\n"
            "print(max(i['num_threads'] for i in threadpool_info() if i['internal_api'] == 'openblas'))")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT,
                         env=env, timeout=120)
    assert out.stdout.strip() == "1"
