"""The answers people see, on the small real bundle: hashtags name the subject, content words answer."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from engine.app import create_app
from space import bundle
from tests.engine.helpers import make_settings


@pytest.fixture
async def client(aiohttp_client: Any, small_bundle_models: Path) -> TestClient:
    return await aiohttp_client(create_app(make_settings(small_bundle_models)))


def _test_items_about(small_bundle: Path, word: str) -> list[dict[str, object]]:
    """Test-split items whose every reference caption names ``word`` (or its plural)."""
    items = json.loads((small_bundle / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    pattern = re.compile(rf"\b{word}s?\b")
    return [it for it in items if it["split"] == "test"
            and all(pattern.search(c.lower()) for c in it["captions"])]


async def test_dog_photos_get_dog(client: TestClient, small_bundle: Path) -> None:
    dogs = _test_items_about(small_bundle, "dog")
    assert len(dogs) >= 5
    named = 0
    for item in dogs:
        r = await client.post("/v1/hashtags", params={"k": "5"}, data=Path(str(item["path"])).read_bytes())
        assert r.status == 200
        words = {h["word"] for h in (await r.json())["hashtags"]}
        named += bool(words & {"dog", "dogs"})
    assert named >= 0.8 * len(dogs), (named, len(dogs))


async def test_man_is_searchable(client: TestClient, small_bundle: Path) -> None:
    r = await client.get("/v1/images", params={"q": "man on a bike", "k": "10"})
    body = await r.json()
    assert r.status == 200 and body["unknown"] == [] and len(body["images"]) == 10
    captions = [h["caption"].lower() for h in body["images"]]
    assert sum("man" in c for c in captions) >= 6, captions
    r = await client.get("/v1/related", params={"q": "man", "k": "5"})
    body = await r.json()
    assert r.status == 200 and len(body["words"]) == 5 and body["unknown"] == []


async def test_misspelt_query_is_corrected(client: TestClient) -> None:
    r = await client.get("/v1/images", params={"q": "dgos", "k": "5"})
    body = await r.json()
    assert r.status == 200 and body["corrected"] == {"dgos": "dogs"} and body["unknown"] == []
    assert sum("dog" in h["caption"].lower() for h in body["images"]) >= 4
    r = await client.get("/v1/images", params={"q": "dogs", "k": "5"})
    assert "corrected" not in await r.json()
