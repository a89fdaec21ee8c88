"""Issue 28: what one hostile request could still do to the engine, each answered at its own depth.

A misspelt word's spelling search on the event loop (every other request waited), a "²" or a non-UTF-8
token that became a 500, server paths in the public statistics, and made-up languages that each cached
a copy of the same answer.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

import space.spelling as spelling
from engine.app import CACHE, RUNTIME, create_app
from engine.cache import LRUCache
from space import bundle
from tests.engine.helpers import TOKEN, make_settings, publish_copy


@pytest.fixture
async def client(aiohttp_client: Any, small_bundle_models: Path) -> TestClient:
    return await aiohttp_client(create_app(make_settings(small_bundle_models)))


async def raw_request(client: TestClient, head: bytes) -> tuple[int, bytes]:
    """Send ``head`` (a request without a body, as bytes: any header byte) on a fresh connection."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    try:
        writer.write(head)
        await writer.drain()
        data = await reader.read()  # Connection: close
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def test_a_word_to_correct_is_searched_off_the_event_loop(
        client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The small bundle is ranked exactly, so its text answers are computed on the loop: not this one."""
    threads: list[threading.Thread] = []
    real = spelling._deletes

    def deletes(word: str) -> set[str]:
        if word == "zzqxw":
            threads.append(threading.current_thread())
        return real(word)

    monkeypatch.setattr(spelling, "_deletes", deletes)
    for path in ("/v1/related", "/v1/images"):
        r = await client.get(path, params={"q": f"dog zzqxw {path[-3:]}"})
        assert r.status == 200, await r.text()
    assert threads and threading.main_thread() not in threads
    # A query of known words still takes the loop's fast path (no pool thread).
    before = client.app[RUNTIME].queries.queries
    assert (await client.get("/v1/related", params={"q": "dog beach"})).status == 200
    assert client.app[RUNTIME].queries.queries == before + 1


async def test_a_500_letter_word_is_not_corrected(client: TestClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[str] = []
    real = spelling._deletes
    monkeypatch.setattr(spelling, "_deletes", lambda word: made.append(word) or real(word))
    r = await client.get("/v1/related", params={"q": "q" * 499})
    assert r.status == 200 and (await r.json())["unknown"] == ["q" * 499]
    assert made == []


@pytest.mark.parametrize("path", ["/v1/similar/{id}?k=²", "/v1/similar/{id}?k=%C2%B2",
                                  "/v1/related?q=dog&k=²", "/v1/images?q=dog&offset=³",
                                  "/v1/images/{id}?size=²"])
async def test_unicode_digits_are_a_400(client: TestClient, path: str) -> None:
    image_id = client.app[RUNTIME].holder.current.ids[0]  # type: ignore[union-attr]
    r = await client.get(path.format(id=image_id))
    body = await r.json()
    assert (r.status, body["error"]) == (400, "bad_parameter"), body


@pytest.mark.parametrize("token", [b"\xff", b"\xc3", b"\xff" + TOKEN.encode(), b"\x80\x80"])
async def test_a_bearer_token_that_is_not_utf8_is_a_401(client: TestClient, token: bytes) -> None:
    for method, path in ((b"POST", b"/v1/admin/reload"), (b"GET", b"/v1/admin/versions")):
        status, body = await raw_request(
            client, method + b" " + path + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        assert status == 401, body
        assert json.loads(body)["error"] == "unauthorized"


def _with_paths(source: Path, dst: Path) -> Path:
    """A copy of ``source`` whose manifest names server paths the way a real ingest does."""
    shutil.copytree(source, dst)
    manifest = json.loads((dst / bundle.MANIFEST).read_text())
    manifest["filter_report"]["ingest"]["examples"] = [
        "bad_json: /srv/secret-corpus/2024-01-01_UTC.json.xz", "unreadable: /srv/secret-corpus/x.jpg"]
    manifest["corpus"]["path"] = "/srv/secret-corpus"
    (dst / bundle.MANIFEST).write_text(json.dumps(manifest))
    return dst


async def test_stats_and_report_publish_no_server_path(aiohttp_client: Any, models: Path, small_bundle: Path,
                                                      tmp_path: Path) -> None:
    source = _with_paths(small_bundle, tmp_path / "source")
    publish_copy(models, source)
    client = await aiohttp_client(create_app(make_settings(models)))
    stats = await client.get("/v1/stats")
    text = await stats.text()
    assert stats.status == 200
    assert "/srv/secret-corpus" not in text and str(models) not in text
    assert "/work/" not in text and "/tmp/" not in text, text[:2000]
    body = json.loads(text)
    assert body["corpus"]["n_kept"] == 300 and body["filter_report"]["ingest"]["posts"] == 300
    layout = await client.get("/v1/report/tsne_layout.json")  # each laid-out image's file, on the server
    text = await layout.text()
    assert layout.status == 200 and "/work/" not in text and "/tmp/" not in text
    assert json.loads(text)["items"][0]["index"] >= 0
    # The admin still sees everything.
    versions = await client.get("/v1/admin/versions", headers={"Authorization": f"Bearer {TOKEN}"})
    assert versions.status == 200


async def test_made_up_languages_share_one_cache_entry(client: TestClient) -> None:
    cache = client.app[CACHE]
    assert isinstance(cache, LRUCache)
    first = await client.get("/v1/images", params={"q": "dog", "lang": "xx"})
    assert first.status == 200
    before = len(cache.data)
    for code in ("xy", "zz", "qq", "abc", "pt-br", "en-zz"):
        r = await client.get("/v1/images", params={"q": "dog", "lang": code})
        assert r.status == 200 and await r.read() == await first.read()
    assert len(cache.data) == before
    for bad in ("english", "e", "x" * 40, "<script>", "en_US", "1"):
        r = await client.get("/v1/images", params={"q": "dog", "lang": bad})
        assert (r.status, (await r.json())["error"]) == (400, "bad_parameter")
    en = await client.get("/v1/images", params={"q": "dog", "lang": "en"})
    assert en.status == 200 and len(cache.data) == before + 1


# ---- limits before work: a photo is admitted before its body is read ---------------------------------

async def _stalled_upload(client: TestClient) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A photo upload whose client sends the headers and half the body, then nothing."""
    assert client.server.host is not None and client.server.port is not None
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    writer.write(b"POST /v1/hashtags HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
                 b"Content-Length: 100000\r\n\r\n" + b"\x89PNG" + b"\0" * 5000)
    await writer.drain()
    return reader, writer


async def _status_of(reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 60)
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length")))
    body = await asyncio.wait_for(reader.readexactly(length), 60)
    return int(head.split()[1]), json.loads(body)


async def test_a_full_photo_queue_answers_before_reading_the_body(aiohttp_client: Any,
                                                                   small_bundle_models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models, image_queue_limit=1)))
    _, writer = await _stalled_upload(client)
    runtime = client.app[RUNTIME]
    for _ in range(200):  # until the stalled upload is admitted (its handler runs)
        if runtime.uploads:
            break
        await asyncio.sleep(0.05)
    assert runtime.uploads == 1
    r = await client.post("/v1/hashtags", data=b"\xff\xd8" + b"\0" * 1000,
                          headers={"Content-Type": "application/octet-stream"})
    assert (r.status, (await r.json())["error"]) == (503, "busy")
    writer.close()


async def test_a_stalled_upload_times_out_and_gives_its_slot_back(aiohttp_client: Any,
                                                                   small_bundle_models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models, upload_timeout_s=0.5)))
    reader, writer = await _stalled_upload(client)
    status, body = await _status_of(reader)
    assert (status, body["error"]) == (408, "request_timeout")
    assert client.app[RUNTIME].uploads == 0 and client.app[RUNTIME].uploads_by_client == {}
    writer.close()


async def test_one_client_has_a_bounded_number_of_uploads(aiohttp_client: Any,
                                                          small_bundle_models: Path) -> None:
    client = await aiohttp_client(create_app(make_settings(small_bundle_models, uploads_per_client=2)))
    stalled = [await _stalled_upload(client) for _ in range(2)]
    runtime = client.app[RUNTIME]
    for _ in range(200):
        if runtime.uploads == 2:
            break
        await asyncio.sleep(0.05)
    r = await client.post("/v1/hashtags", data=b"x", headers={"Content-Type": "application/octet-stream"})
    assert (r.status, (await r.json())["error"]) == (429, "too_many_uploads")
    for _, writer in stalled:
        writer.close()
