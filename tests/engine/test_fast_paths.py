"""The uncached text fast paths: pre-encoded bodies, queries on the loop, batched Redis, one BLAS thread."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import service
from engine.app import METRICS, RUNTIME, create_app
from engine.cache import RedisCache
from engine.model import json_around_score, load_model
from engine.service import ImageJob, WordJob
from space import bundle, vectorindex
from space.query import parse_query
from tests.conftest import ROOT, RedisServer
from tests.engine import oracle
from tests.engine.helpers import make_settings
from tests.waiting import until

QUERIES = ["dog", "dog -grass", "red shirt girl", "zzqx dog", "zzqx", "-dog", "beach water -zzqx", "man bike"]


def test_json_around_score_is_json_dumps() -> None:
    template = {"id": 'a"b\\c', "score": 0.0, "caption": "niño ☃ \n", "url": "/v1/images/a%22b", "lang": None}
    head, tail = json_around_score(template)
    for score in (0.1234, -0.5, 1.0, 0.0, 1e-05):
        expected = json.dumps({**template, "score": score}, ensure_ascii=False)
        assert head + repr(score) + tail == expected
    assert json_around_score({"word": "café", "score": 0.0}) == ('{"word": "café", "score": ', "}")


def _dumps(answer: dict[str, Any]) -> bytes:
    return json.dumps(answer, ensure_ascii=False).encode("utf-8")


def test_bodies_are_byte_identical_to_json_dumps(small_bundle: Path) -> None:
    model = load_model(small_bundle)
    n = len(model.items)
    lang = next(iter(model.langs), "en")
    checked = 0
    for text in QUERIES:
        query = parse_query(text)
        for k, offset, language in ((1, 0, None), (7, 3, None), (n + 5, 0, None), (5, 0, lang), (5, 0, "xx")):
            body = service.images(model, [ImageJob(query, k, offset, language, 0.5)])[0]
            assert body == _dumps(oracle.images(model, query, k, offset, language, 0.5)), (text, k, offset)
            checked += 1
        for k in (1, 10, len(model.space.words) + 3):
            assert service.related(model, [WordJob(query, k)])[0] == _dumps(oracle.related(model, query, k))
    for raw in np.load(small_bundle / bundle.IMAGE_VECTORS)[:5]:  # photos' raw encoder outputs
        for k in (1, 10, n + 5):
            assert service.similar(model, raw, k) == _dumps(oracle.similar(model, raw, k))
            assert service.hashtags(model, raw, k) == _dumps(oracle.hashtags(model, raw, k))
    answer = json.loads(service.images(model, [ImageJob(parse_query("dog"), 5)])[0])
    assert len(answer["images"]) == 5 and answer["unknown"] == [] and checked == 5 * len(QUERIES)


async def test_loop_and_pool_answer_the_same(aiohttp_client: Any, small_bundle_models: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    on_loop = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    in_pool = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    monkeypatch.setattr(in_pool.app[RUNTIME], "inline", lambda *args: False)
    for text in QUERIES:
        for path, params in (("/v1/images", {"q": text, "k": "6", "offset": "1"}),
                             ("/v1/images", {"q": text, "k": "4", "lang": "en"}),
                             ("/v1/related", {"q": text, "k": "5"})):
            a = await on_loop.get(path, params=params)
            b = await in_pool.get(path, params=params)
            assert a.status == b.status == 200
            assert await a.read() == await b.read()
    plain = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    # No query without a word to correct touches the text pool: a language's rows are kept apart at load,
    # so a filtered query on an exactly ranked bundle is answered on the loop like an unfiltered one.
    for text in [t for t in QUERIES if "zzqx" not in t]:
        assert (await plain.get("/v1/images", params={"q": text, "k": "9"})).status == 200
        assert (await plain.get("/v1/images", params={"q": text, "k": "4", "lang": "en"})).status == 200
        assert (await plain.get("/v1/related", params={"q": text})).status == 200
    assert not plain.app[RUNTIME].text.executor._threads
    # Queries with a word to correct ("zzqx": a spelling search) go to the pool (issue 28).
    assert (await plain.get("/v1/related", params={"q": "zzqx dog"})).status == 200
    assert plain.app[RUNTIME].text.executor._threads
    assert in_pool.app[RUNTIME].text.executor._threads



async def test_word_index_searches_stay_on_the_loop_wide_text_searches_go_to_the_pool(
        aiohttp_client: Any, small_bundle_models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Above EXACT_ROWS (here: every bundle) related words come from the word index at its default
    breadth, cheaper than the hop to a worker; a text query over the photos walks its index wide."""
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", 0)
    client = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    for text in [t for t in QUERIES if "zzqx" not in t]:
        assert (await client.get("/v1/related", params={"q": text, "k": "5"})).status == 200
    assert not client.app[RUNTIME].text.executor._threads
    assert (await client.get("/v1/images", params={"q": "dog", "k": "5"})).status == 200
    assert client.app[RUNTIME].text.executor._threads


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
        # put() returns at once; its SET goes out with the next batch, ahead of a later GET.
        before = calls
        for i in range(32):
            cache.put(f"topicspace:engine:test:p{i}", str(i).encode())
        assert calls == before  # nothing sent yet: put never waits
        got = await asyncio.gather(*(cache.get(f"topicspace:engine:test:p{i}") for i in range(32)))
        assert got == [str(i).encode() for i in range(32)] and calls <= before + 2
        assert cache.up
    finally:
        await cache.close()


async def test_redis_batches_fail_soft(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, ttl_s=60, timeout_s=0.2, retry_after_s=0.3)
    try:
        await cache.set("topicspace:engine:test:y", b"2")
        redis_server.stop()
        cache.put("k2", b"v")  # a put into a dead Redis is dropped, never raised
        # Answered (with nothing), not hung: the deadline only stops a hang, however busy the machine.
        values = await asyncio.wait_for(asyncio.gather(*(cache.get(f"k{i}") for i in range(20)),
                                                       cache.set("k", b"v")), timeout=60)
        assert values == [None] * 21 and not cache.up
        cache.put("k3", b"v")  # breaker open: skipped at once
        redis_server.start()

        async def back() -> bool:
            await cache.set("topicspace:engine:test:y", b"3")  # skipped until the breaker lets it try
            return cache.up

        await until(back, "the cache to reach Redis again", every=0.1)
        assert await cache.get("topicspace:engine:test:y") == b"3"
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


def _hits(body: bytes, field: str) -> tuple[list[str], list[float], Any]:
    answer = json.loads(body)
    name = "id" if field == "images" else "word"
    rest = {k: v for k, v in answer.items() if k != field}
    return [h[name] for h in answer[field]], [h["score"] for h in answer[field]], rest


def _identical(batched: bytes, alone: bytes, field: str) -> None:
    assert batched == alone, field


def _same(batched: bytes, alone: bytes, field: str) -> None:
    ids_a, scores_a, rest_a = _hits(batched, field)
    ids_b, scores_b, rest_b = _hits(alone, field)
    assert rest_a == rest_b
    assert scores_a == pytest.approx(scores_b, abs=2e-4)
    # Hits with (nearly) equal scores may trade places between a matrix product and a matrix-vector one,
    # also across the k-th place (this tiny bundle's words are nearly all at 0.998).
    where_b = {hit: i for i, hit in enumerate(ids_b)}
    for i, hit in enumerate(ids_a):
        if hit != ids_b[i]:
            tied_with = scores_b[where_b[hit]] if hit in where_b else scores_b[-1]
            assert abs(tied_with - scores_a[i]) <= 2e-4, (hit, i, scores_a, scores_b)


@pytest.mark.parametrize("exact_rows", [vectorindex.EXACT_ROWS, 0])
def test_batched_answers_match_one_at_a_time(small_bundle: Path, exact_rows: int,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """One search for many queries answers each as a query alone would: exactly (one matrix product), and
    through the indexes (exact_rows 0), where they are the same searches."""
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", exact_rows)
    model = load_model(small_bundle)
    lang = next(iter(model.langs), "en")
    jobs = [ImageJob(parse_query(text), k, offset, language)
            for text in QUERIES for k, offset in ((1, 0), (7, 3), (len(model.items) + 5, 0))
            for language in (None, lang)]
    for batched, job in zip(service.images(model, jobs), jobs, strict=True):
        # Through the index each query has its own search; a product of many may differ in the last bits.
        check = _identical if not exact_rows and job.lang is None else _same
        check(batched, service.images(model, [job])[0], "images")
    ks = (1, 10, len(model.space.words) + 3)
    word_jobs = [WordJob(parse_query(text), k) for text in QUERIES for k in ks]
    check = _same if exact_rows else _identical
    for batched, word_job in zip(service.related(model, word_jobs), word_jobs, strict=True):
        check(batched, service.related(model, [word_job])[0], "words")
    dog = json.loads(service.images(model, [ImageJob(parse_query("dog"), 5)])[0])
    assert len(dog["images"]) == 5 and all("dog" in h["caption"].lower() for h in dog["images"][:3])
    assert json.loads(service.related(model, [WordJob(parse_query("zzqx"), 5)])[0]) == {
        "words": [], "unknown": ["zzqx"], "version": model.version}


async def test_concurrent_queries_share_one_product(aiohttp_client: Any, small_bundle_models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    words = ["dog", "beach", "girl", "man", "water", "grass", "ball", "snow", "red", "bike", "zzqx"]
    pairs = zip(words, words[3:] + words[:3], strict=True)
    params = [{"q": f"{a} {b}", "k": str(1 + i % 9)} for i, (a, b) in enumerate(pairs)]

    async def get(path: str, p: dict[str, str]) -> bytes:
        r = await client.get(path, params=p)
        assert r.status == 200
        return await r.read()

    batcher = client.app[RUNTIME].queries
    together = await asyncio.gather(*(get(path, p) for p in params for path in ("/v1/images", "/v1/related")))
    # The queries with "zzqx" (a word to correct) are answered in the pool (issue 28), not batched.
    assert batcher.queries == 2 * len([p for p in params if "zzqx" not in p["q"]])
    # They were batched (how many share one product depends on how the requests reach the loop).
    assert batcher.batches < batcher.queries, (batcher.batches, batcher.queries)
    text = client.app[METRICS].render().decode()
    assert f"engine_query_batch_size_count {float(batcher.batches)}" in text
    fresh = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    asked = [(p, path) for p in params for path in ("/v1/images", "/v1/related")]
    for body, (p, path) in zip(together, asked, strict=True):
        r = await fresh.get(path, params=p)  # one at a time, in another app (no shared cache)
        _same(body, await r.read(), "images" if path == "/v1/images" else "words")


async def test_query_batcher_isolates_a_failing_query(small_bundle: Path) -> None:
    from engine.querybatch import QueryBatcher

    model = load_model(small_bundle)

    def answer_many(_: Any, jobs: Any) -> list[bytes]:
        if "bad" in jobs:
            raise ValueError("bad job")
        return [job.encode() for job in jobs]

    batcher = QueryBatcher()
    futures = [batcher.run(answer_many, model, job) for job in ("a", "bad", "b")]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == b"a" and results[2] == b"b" and isinstance(results[1], ValueError)
    assert batcher.batches == 1 and batcher.queries == 3
