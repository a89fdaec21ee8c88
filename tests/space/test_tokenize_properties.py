"""Properties of the tokeniser on any text, and hostile text queries through the real engine with Redis.

The engine part sends queries shaped like attacks on the cache (``KEYS *``, ``\\r\\nFLUSHALL\\r\\n``)
and garbage (control characters, 10,000 characters, emoji): each must be a 200 or a 4xx JSON error,
and the Redis database must still hold its keys afterwards.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis
from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine.app import create_app
from space.tokenize import stop_words, tokenize, words
from tests.conftest import RedisServer
from tests.engine.helpers import make_settings
from tests.waiting import until

# Text the tokeniser meets in captions: any Unicode, plus the characters its rules treat specially.
SPECIAL = st.sampled_from(["#", "@", ".", "·", "http://", "www.", " ", "\n", "İ", "ǅ", "ß", "2019", "½"])
TEXT = st.lists(st.one_of(st.text(max_size=20), SPECIAL), max_size=20).map("".join)


def _numbers_only(tok: str) -> bool:
    return all(c.isdigit() or c in ".·" for c in tok)


@settings(max_examples=400, deadline=None)
@given(TEXT)
@example("#barcelona#food 2019 3.14 www.x.com @me ÀÉÎ İstanbul ǅemal ½ col·lecció")
@example("0·0 3·14 1.000·5 ·2· a·1")
def test_tokenize_properties(text: str) -> None:
    toks = tokenize(text)
    stop = stop_words()
    for tok in toks:
        assert tok == tok.lower(), tok
        assert tok not in stop, tok
        assert "#" not in tok and not _numbers_only(tok) and len(tok) >= 2, tok
        assert tok.strip() == tok and tok, tok
    assert tokenize(" ".join(toks)) == toks  # idempotent on its own output
    assert set(toks) <= set(words(text))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=60))
def test_words_never_crash_and_have_no_hash(text: str) -> None:
    ws = words(text)
    assert all("#" not in w and w == w.lower() for w in ws)
    assert words(" ".join(ws)) == ws


HOSTILE_QUERIES = [
    "", "   ", "\t\n", "dog " * 500, "🐶🏖️🌊", "😀" * 30, "perro 犬 собака كلب dog", "\x00", "dog\x00beach",
    "\x1b[31mred\x1b[0m", "\u202edog", "\ufeff", "the and of a", "el la de y", "zzqx qqxz wwvk",
    "*", "KEYS *", "\r\nFLUSHALL\r\n", "dog\r\nFLUSHALL\r\nbeach", "topicspace:engine:*", "-", "- - -",
    "-dog", "--dog", "#", "##dog", "@dog", "http://evil.example/?q=dog", "../../etc/passwd",
    "'; DROP TABLE x", "%00%0d%0aFLUSHALL", "dog" + "\u0301" * 200,
]
HOSTILE_PARAMS: list[dict[str, str]] = [
    {"q": "dog", "k": "-1"}, {"q": "dog", "k": "abc"}, {"q": "dog", "k": "9" * 40},
    {"q": "dog", "offset": "99999999999999999999"}, {"q": "dog", "lang": "*"},
    {"q": "dog", "lang": "\r\nKEYS"},
]


async def test_hostile_queries_never_5xx_and_redis_keeps_its_keys(
    aiohttp_client: Any, small_bundle_models: Path, redis_server: RedisServer
) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models, redis_url=redis_server.url)))
    r = redis.Redis.from_url(redis_server.url)
    r.set("sentinel:not-the-engine", b"1")  # FLUSHALL/FLUSHDB or a stray DEL would remove it
    assert (await client.get("/v1/related", params={"q": "dog"})).status == 200
    wrong: list[tuple[str, object, int, object]] = []
    calls = [(path, {"q": q}) for q in HOSTILE_QUERIES for path in ("/v1/related", "/v1/images")]
    calls += [(path, p) for p in HOSTILE_PARAMS for path in ("/v1/related", "/v1/images")]
    statuses: dict[int, int] = {}
    for path, params in calls:
        resp = await client.get(path, params=params)
        body = await resp.json(content_type=None)
        statuses[resp.status] = statuses.get(resp.status, 0) + 1
        if resp.status == 200:
            good = ("words" in body) if path == "/v1/related" else ("images" in body)
        else:
            good = 400 <= resp.status < 500 and set(body) == {"error", "message"} and bool(body["message"])
        if not good:
            wrong.append((path, params, resp.status, body))
    # 10,000 characters exceed aiohttp's 8190-byte request line: its parser answers a plain-text 400
    # before the app runs (the app's own limit, 500 characters, answers JSON: "dog " * 500 above).
    for path in ("/v1/related", "/v1/images"):
        resp = await client.get(path, params={"q": "dog " * 2500})
        if resp.status != 400:
            wrong.append((path, "10,000 characters", resp.status, await resp.text()))
    assert wrong == []
    assert statuses.get(200, 0) >= 10 and sum(v for s, v in statuses.items() if s >= 400) >= 10, statuses
    health = await (await client.get("/healthz")).json()
    assert health["cache"] == "redis" and health["cache_up"] is True
    assert r.get("sentinel:not-the-engine") == b"1"
    # Answers are stored after their responses (Cache.put): wait for the last batch to land.
    await until(lambda: len(r.keys("topicspace:engine:*")) >= 10, "the answers stored in Redis")
    keys = r.keys("topicspace:engine:*")
    assert len(keys) >= 10  # the answers above were cached, under the engine's prefix only
    assert set(r.keys("*")) == {*keys, b"sentinel:not-the-engine"}
