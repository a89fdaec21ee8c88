"""Photo micro-batching: batched encodings equal single ones, one bad image fails alone, cancels drop out."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from engine import service
from engine.app import create_app
from engine.batcher import EncodeBatcher
from engine.keys import RUNTIME
from engine.metrics import Metrics
from engine.model import load_model
from space import bundle
from space.images import load_for_network
from tests.engine.helpers import make_settings
from tests.waiting import until

N = 24
HTTP = 8  # photos sent over HTTP, with one broken upload among them


@pytest.fixture(scope="module")
def photos(small_bundle: Path) -> list[bytes]:
    """``N`` distinct real Flickr8k photos of the bundle."""
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    return [Path(item["path"]).read_bytes() for item in items[:N]]


def _metric(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} ([\d.e+-]+)$", text, re.MULTILINE)
    assert m, name
    return float(m.group(1))


async def test_concurrent_photos_batch_and_match_single(
    aiohttp_client: Any, small_bundle_models: Path, photos: list[bytes]
) -> None:
    settings = make_settings(small_bundle_models, encode_batch=8, encode_wait_s=0.005)
    client = await aiohttp_client(create_app(settings))
    runtime = client.app[RUNTIME]
    model = runtime.holder.require()
    limits = service.ImageLimits(settings.max_upload_bytes, settings.max_pixels)
    single = [service.encode_image(model, data, limits) for data in photos]

    # Straight through the runtime: every batched vector equals the photo encoded alone.
    vectors = await asyncio.gather(*(runtime.encode_photo(model, data, limits.max_bytes, limits.max_pixels)
                                     for data in photos))
    worst = max(float(np.abs(v - s).max()) for v, s in zip(vectors, single, strict=True))
    assert worst <= 1e-5, worst

    # Over HTTP, with a broken image among them: it alone gets its 400, the others their answers.
    broken = photos[0][: len(photos[0]) // 2]
    bodies = [*photos[:HTTP // 2], broken, *photos[HTTP // 2:HTTP]]
    rs = await asyncio.gather(*(client.post("/v1/similar", params={"k": "5"}, data=b,
                                            headers={"Content-Type": "application/octet-stream"})
                                for b in bodies))
    answers = [await r.json() for r in rs]
    assert rs[HTTP // 2].status == 400 and answers[HTTP // 2]["error"] == "bad_image"
    ok = answers[:HTTP // 2] + answers[HTTP // 2 + 1:]
    assert [r.status for r in rs[:HTTP // 2] + rs[HTTP // 2 + 1:]] == [200] * HTTP
    expected = [json.loads(service.similar(model, s, 5)) for s in single[:HTTP]]
    assert ok == expected
    assert [a["images"][0]["id"] for a in ok] == model.ids[:HTTP]  # each photo finds itself first

    text = await (await client.get("/metrics")).text()
    calls = _metric(text, "engine_encode_batch_size_count")
    images = _metric(text, "engine_encode_batch_size_sum")
    singles = _metric(text, 'engine_encode_batch_size_bucket{le="1.0"}')
    assert images == N + HTTP  # each distinct photo encoded once per pass, the broken one never
    assert calls < images and singles < calls, (calls, images, singles)  # batches of more than one
    assert _metric(text, 'engine_encode_batch_size_bucket{le="8.0"}') == calls  # never over the cap

    # One new photo asked with six different k at once: six answers, one encoding.
    fresh = photos[HTTP]
    rs = await asyncio.gather(*(client.post("/v1/hashtags", params={"k": str(k)}, data=fresh)
                                for k in range(1, 7)))
    assert [len((await r.json())["hashtags"]) for r in rs] == list(range(1, 7))
    text = await (await client.get("/metrics")).text()
    assert _metric(text, "engine_encode_batch_size_sum") == images + 1
    assert _metric(text, 'engine_cache_coalesced_total{endpoint="encode"}') == 5


async def test_cancelled_wait_is_dropped_and_bad_input_fails_alone(
    small_bundle: Path, photos: list[bytes]
) -> None:
    model = load_model(small_bundle)
    metrics = Metrics()
    batcher = EncodeBatcher(max_batch=16, max_wait_s=0.0, runners=1, metrics=metrics)
    xs = [load_for_network(p) for p in photos[:6]]
    # The first encoder call holds the one runner until the test lets it go.
    encode, busy, release = model.encode, threading.Event(), threading.Event()

    def held_first(batch: np.ndarray) -> np.ndarray:
        if not busy.is_set():
            busy.set()
            assert release.wait(60)
        return encode(batch)

    model.encode = held_first  # type: ignore[method-assign]
    try:
        first = asyncio.ensure_future(batcher.encode(model, xs[0]))
        await until(busy.is_set, "the one runner busy with the first image")
        queued = [asyncio.ensure_future(batcher.encode(model, x)) for x in xs[1:]]  # the next five queue
        await asyncio.sleep(0)
        queued[1].cancel()
        queued[3].cancel()
        release.set()
        results = await asyncio.gather(first, *queued, return_exceptions=True)
        assert all(isinstance(results[i], asyncio.CancelledError) for i in (2, 4))
        for x, v in zip([xs[0], xs[1], xs[3], xs[5]], [results[0], results[1], results[3], results[5]],
                        strict=True):
            assert isinstance(v, np.ndarray)
            single = model.encode(x[None])[0]
            assert np.abs(v - single).max() <= 1e-4  # the raw encoder vector (centring needs the norm)
        assert batcher.pending == []
        text = metrics.render().decode()
        assert _metric(text, "engine_encode_batch_size_sum") == 4  # the cancelled two were never encoded
        assert _metric(text, "engine_encode_batch_size_count") == 2

        # An input the encoder cannot take fails its own request; its batch-mates still get vectors.
        wrong = np.zeros((3, 100, 100), dtype=np.float32)
        mixed = await asyncio.gather(*(batcher.encode(model, x) for x in (xs[0], wrong, xs[1])),
                                     return_exceptions=True)
        assert isinstance(mixed[1], Exception)
        for got, before in ((mixed[0], results[0]), (mixed[2], results[1])):
            assert isinstance(got, np.ndarray) and isinstance(before, np.ndarray)
            assert np.abs(got - before).max() <= 1e-5
    finally:
        release.set()
        await batcher.close()
