"""Every endpoint over the small real bundle, through real HTTP (in-process cache)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from engine.app import create_app
from engine.public import public
from space import bundle
from space.items import public_ids
from tests.engine.helpers import TOKEN, caption_vectors, make_settings, publish_copy

DOG = re.compile(r"\b(dog|dogs|puppy|puppies)\b", re.I)


@pytest.fixture
async def client(aiohttp_client: Any, small_bundle_models: Path) -> TestClient:
    return await aiohttp_client(create_app(make_settings(small_bundle_models)))


def _counter(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            series, _, value = line.rpartition(" ")
            got = series[len(name):].strip("{}")
            if ",".join(sorted(got.split(","))) == want or (not labels and not got):
                return float(value)
    return 0.0


async def test_related_words(client: TestClient) -> None:
    r = await client.get("/v1/related", params={"q": "dog", "k": "7"})
    assert r.status == 200
    body = await r.json()
    assert len(body["words"]) == 7
    assert body["unknown"] == []
    assert body["version"]
    words = [w["word"] for w in body["words"]]
    assert "dog" not in words  # the query's own words are excluded
    scores = [w["score"] for w in body["words"]]
    assert scores == sorted(scores, reverse=True)


@pytest.fixture
async def oracle_client(aiohttp_client: Any, models: Path) -> TestClient:
    """The small bundle with each image placed at its caption's vector (a perfect encoder).

    Ranking quality then depends only on the engine (query embedding, search, paging), not on how well
    the quick CNN happened to train.
    """
    source = bundle.active_path(models)
    publish_copy(models, source, image_vectors=caption_vectors(source))
    return await aiohttp_client(create_app(make_settings(models)))


async def test_images_for_dog_are_dogs(oracle_client: TestClient) -> None:
    client = oracle_client
    r = await client.get("/v1/images", params={"q": "dog", "k": "5"})
    assert r.status == 200
    body = await r.json()
    hits = body["images"]
    assert len(hits) == 5
    relevant = sum(bool(DOG.search(h["caption"])) for h in hits)
    assert relevant >= 4, [h["caption"] for h in hits]
    assert body["confident"] is True
    assert all(h["url"] == f"/v1/images/{h['id']}" for h in hits)
    # offset pages through the same ranking
    r2 = await client.get("/v1/images", params={"q": "dog", "k": "3", "offset": "2"})
    assert [h["id"] for h in (await r2.json())["images"]] == [h["id"] for h in hits[2:5]]


async def test_negative_term_changes_answer(client: TestClient) -> None:
    a = await (await client.get("/v1/images", params={"q": "dog", "k": "5"})).json()
    b = await (await client.get("/v1/images", params={"q": "dog -grass", "k": "5"})).json()
    assert [(h["id"], h["score"]) for h in a["images"]] != [(h["id"], h["score"]) for h in b["images"]]
    c = await (await client.get("/v1/related", params={"q": "dog -grass", "k": "5"})).json()
    assert "grass" not in [w["word"] for w in c["words"]]


async def test_unknown_words_reported(client: TestClient) -> None:
    r = await client.get("/v1/images", params={"q": "dog qwxzzy"})
    body = await r.json()
    assert r.status == 200 and body["unknown"] == ["qwxzzy"] and body["images"]
    r = await client.get("/v1/related", params={"q": "qwxzzy blorfq"})
    body = await r.json()
    assert r.status == 200
    assert body == {"words": [], "unknown": ["qwxzzy", "blorfq"], "version": body["version"]}
    r = await client.get("/v1/images", params={"q": "qwxzzy"})
    body = await r.json()
    assert body["images"] == [] and body["confident"] is False and body["unknown"] == ["qwxzzy"]


async def test_lang_filter(client: TestClient) -> None:
    en = await (await client.get("/v1/images", params={"q": "dog", "lang": "en"})).json()
    assert en["images"] and all(h["lang"] == "en" for h in en["images"])
    ca = await (await client.get("/v1/images", params={"q": "dog", "lang": "ca"})).json()
    assert ca["images"] == [] and ca["confident"] is False


@pytest.mark.parametrize(
    ("path", "params", "status", "code"),
    [
        ("/v1/related", {}, 400, "empty_query"),
        ("/v1/related", {"q": "the a of"}, 400, "empty_query"),
        ("/v1/related", {"q": "dog", "k": "abc"}, 400, "bad_parameter"),
        ("/v1/related", {"q": "dog", "k": "0"}, 400, "bad_parameter"),
        ("/v1/images", {"q": "dog", "k": "100000"}, 400, "bad_parameter"),
        ("/v1/images", {"q": "dog", "offset": "-1"}, 400, "bad_parameter"),
        ("/v1/images", {"q": "x" * 600}, 400, "empty_query"),
        ("/v1/images/nope.jpg", {}, 404, "not_found"),
        ("/v1/report/..%2Fmanifest.json", {}, 404, "not_found"),
        ("/v1/report/../../etc/passwd", {}, 404, "not_found"),
        ("/v1/nothing", {}, 404, "not_found"),
    ],
)
async def test_bad_input_is_4xx_json(
    client: TestClient, path: str, params: dict[str, str], status: int, code: str
) -> None:
    r = await client.get(path, params=params)
    assert r.status == status
    body = await r.json()
    assert body["error"] == code and body["message"]


async def test_method_not_allowed_is_json(client: TestClient) -> None:
    r = await client.get("/v1/hashtags")
    assert r.status == 405
    assert (await r.json())["error"] == "method_not_allowed"


async def test_image_file_and_thumbnail(client: TestClient) -> None:
    hits = (await (await client.get("/v1/images", params={"q": "dog", "k": "1"})).json())["images"]
    r = await client.get(hits[0]["url"])
    assert r.status == 200
    data = await r.read()
    assert data[:3] == b"\xff\xd8\xff" and r.content_type == "image/jpeg"
    r = await client.get(hits[0]["url"], params={"size": "64"})
    thumb = await r.read()
    assert r.status == 200 and thumb[:3] == b"\xff\xd8\xff" and len(thumb) < len(data)
    import io

    from PIL import Image

    assert max(Image.open(io.BytesIO(thumb)).size) <= 64
    r = await client.get(hits[0]["url"], params={"size": "999999999"})
    assert r.status == 400


async def test_hashtags_and_similar(client: TestClient, small_bundle: Path) -> None:
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text())["items"]
    photo = Path(items[0]["path"]).read_bytes()
    vocab = set(json.loads((small_bundle / "vocab.json").read_text())["words"])
    r = await client.post("/v1/hashtags", params={"k": "8"}, data=photo)
    assert r.status == 200
    tags = (await r.json())["hashtags"]
    assert len(tags) == 8 and {t["word"] for t in tags} <= vocab
    assert all(-1.0001 <= t["score"] <= 1.0001 for t in tags)
    # multipart field "image" gives the same answer
    form = aiohttp.FormData()
    form.add_field("image", photo, filename="x.jpg", content_type="image/jpeg")
    r = await client.post("/v1/hashtags", params={"k": "8"}, data=form)
    assert r.status == 200 and (await r.json())["hashtags"] == tags
    r = await client.post("/v1/similar", params={"k": "4"}, data=photo)
    assert r.status == 200
    sims = (await r.json())["images"]
    assert len(sims) == 4 and all(h["url"].startswith("/v1/images/") for h in sims)
    # The upload is framed as the bundle framed its photos (the whole photo), so a corpus photo sent back
    # lands on its own stored vector.
    assert bundle.read_manifest(small_bundle)["config"]["encode_framing"] == "whole"
    assert sims[0]["id"] == public_ids(items)[0] and sims[0]["score"] > 0.999


async def test_stats_report_health(client: TestClient, small_bundle: Path) -> None:
    stats = await (await client.get("/v1/stats")).json()
    manifest = bundle.read_manifest(small_bundle)
    assert stats["version"] == manifest["version"]
    # The manifest's filter report, less what names server paths (the ingest examples: engine/public.py).
    assert stats["filter_report"] == public(manifest["filter_report"])
    assert "examples" not in stats["filter_report"]["ingest"]
    assert stats["n_images"] == 300 and stats["languages"] == {"en": 300}
    assert stats["top_words"] and "stats.json" in stats["report_files"]
    r = await client.get("/v1/report/stats.json")
    assert r.status == 200 and json.loads(await r.read()) == stats["report"]
    health = await (await client.get("/healthz")).json()
    assert (health["status"], health["version"], health["cache"]) == ("ok", manifest["version"], "memory")
    assert "last_error" not in health  # a refused bundle's reason (paths) is for admins: /v1/admin/versions


async def test_cache_hit_moves_metric(client: TestClient) -> None:
    before = await (await client.get("/metrics")).text()
    a = await client.get("/v1/images", params={"q": "beach dog", "k": "4"})
    b = await client.get("/v1/images", params={"q": "dog beach", "k": "4"})  # same normalised query
    assert await a.json() == await b.json()
    after = await (await client.get("/metrics")).text()
    hits = _counter(after, "engine_cache_hits_total", endpoint="images") - _counter(
        before, "engine_cache_hits_total", endpoint="images")
    misses = _counter(after, "engine_cache_misses_total", endpoint="images") - _counter(
        before, "engine_cache_misses_total", endpoint="images")
    assert (hits, misses) == (1, 1)


async def test_metrics_well_formed(client: TestClient) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    await client.get("/v1/related", params={"q": "dog"})
    r = await client.get("/metrics")
    assert r.status == 200 and r.content_type == "text/plain"
    families = {f.name: f for f in text_string_to_metric_families(await r.text())}
    for name in ("engine_requests", "engine_request_seconds", "engine_cache_hits", "engine_cache_misses",
                 "engine_bundle_info", "engine_redis_up"):
        assert name in families, name
    samples = families["engine_requests"].samples
    assert any(s.labels.get("endpoint") == "/v1/related" and s.labels.get("status") == "200" for s in samples)
    assert families["engine_redis_up"].samples[0].value == -1  # no Redis configured


async def test_openapi(client: TestClient) -> None:
    doc = await (await client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.")
    routes = {r.resource.canonical for r in client.app.router.routes() if r.resource is not None}
    documented = set(doc["paths"])
    assert routes == documented

    def refs(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [v for k, v in node.items() if k == "$ref"] + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.split("/")[-1] in doc["components"]["schemas"], ref


async def test_admin_reload_auth(aiohttp_client: Any, small_bundle_models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    r = await client.post("/v1/admin/reload")
    assert r.status == 401 and (await r.json())["error"] == "unauthorized"
    r = await client.post("/v1/admin/reload", headers={"Authorization": "Bearer wrong"})
    assert r.status == 401
    r = await client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200 and (await r.json())["version"]
    r = await client.post("/v1/admin/reload", params={"version": "../x"},
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 404
    closed = await aiohttp_client(create_app(make_settings(small_bundle_models, admin_token=None)))
    r = await closed.post("/v1/admin/reload", headers={"Authorization": "Bearer "})
    assert r.status == 403 and (await r.json())["error"] == "admin_disabled"


def test_engine_runs_without_torch() -> None:
    code = "import engine.app, engine.__main__, sys; assert 'torch' not in sys.modules, 'torch imported'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


async def test_a_bug_is_a_logged_json_500(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from engine import service

    def boom(model: object) -> dict[str, object]:
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(service, "stats", boom)
    r = await client.get("/v1/stats")
    assert r.status == 500 and (await r.json())["error"] == "internal"
    assert "simulated bug" in caplog.text
    assert (await client.get("/healthz")).status == 200
