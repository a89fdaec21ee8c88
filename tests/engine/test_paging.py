"""Paging never changes a ranking: pages 1-5 of a query, concatenated, are one answer five pages deep.

Checked exactly ranked and through the bundle's usearch indexes (the exact threshold lowered under the
small bundle's 300 images and its words), where a deeper page widens the graph search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from engine.app import RUNTIME, create_app
from space import vectorindex
from tests.engine.helpers import make_settings, spy_searches

QUERIES = ["dog", "red shirt girl", "beach water -grass", "man bike"]
K = 20
PAGES = 5


@pytest.mark.parametrize("exact_rows", [vectorindex.EXACT_ROWS, 50])
async def test_pages_concatenated_are_one_deeper_answer(
    aiohttp_client: Any, small_bundle_models: Path, monkeypatch: pytest.MonkeyPatch, exact_rows: int
) -> None:
    monkeypatch.setattr(vectorindex, "EXACT_ROWS", exact_rows)
    searches = spy_searches(monkeypatch)
    client = await aiohttp_client(create_app(make_settings(small_bundle_models)))
    model = client.app[RUNTIME].holder.require()
    through_index = len(model.image_vectors) > exact_rows
    assert through_index == (exact_rows == 50)

    async def get(path: str, **params: Any) -> dict[str, Any]:
        r = await client.get(path, params={name: str(value) for name, value in params.items()})
        assert r.status == 200
        return await r.json()  # type: ignore[no-any-return]

    for text in QUERIES:
        pages = [(await get("/v1/images", q=text, k=K, offset=K * page))["images"] for page in range(PAGES)]
        whole = (await get("/v1/images", q=text, k=K * PAGES))["images"]
        assert [hit for page in pages for hit in page] == whole, text
        assert len(whole) == K * PAGES
        middle = (await get("/v1/images", q=text, k=7, offset=61))["images"]  # across the first tier's end
        assert middle == whole[61:68]
        words = (await get("/v1/related", q=text, k=100))["words"]
        for k in (1, 5, 30):
            assert (await get("/v1/related", q=text, k=k))["words"] == words[:k]
    if through_index:
        beam = int(model.images_index.expansion_search)
        # The graph was searched, deeper pages a tier wider; photos in the text pool, related words (a
        # narrow word-index search) on the loop.
        assert {beam, beam * vectorindex.TIER_GROWTH} <= {k for _, k in searches}
        assert client.app[RUNTIME].text.executor._threads
        assert client.app[RUNTIME].queries.queries == 4 * len(QUERIES)
    else:
        assert searches == [] and client.app[RUNTIME].queries.queries > 0
