"""HTTP routes: thin handlers that parse parameters, consult the cache and call :mod:`engine.service`."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import Any, cast

from aiohttp import BodyPartReader, MultipartReader, StreamReader, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from engine import service
from engine.cache import cache_key
from engine.errors import AdminDisabled, BadParameter, NotFound, SlowUpload, Unauthorized, UnknownVersion
from engine.keys import BUS, CACHE, METRICS, RUNTIME, SETTINGS
from engine.model import Model
from engine.openapi import spec
from engine.public import public
from engine.querybatch import AnswerMany
from space import bundle
from space.errors import BadImage, ImageTooLarge
from space.images import thumbnail_jpeg
from space.version import __version__

JSON = "application/json"
MIN_THUMB = 16
IMAGE_HEADERS = {"Cache-Control": "public, max-age=3600"}
# What a multipart body may hold beyond the image itself (boundaries, headers, small fields).
FRAMING_BYTES = 64 * 1024
LANG_CODE = re.compile(r"[a-z]{2,3}(-[a-z0-9]{2,8})?")


def _int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadParameter(f"{name} must be an integer, got {raw[:20]!r}.") from None
    if not lo <= value <= hi:
        raise BadParameter(f"{name} must be between {lo} and {hi}, got {value}.")
    return value


def k_param(request: web.Request) -> int:
    """The ``k`` of a request: 1 to ``max_k``, ``default_k`` when absent."""
    s = request.app[SETTINGS]
    return _int(request, "k", s.default_k, 1, s.max_k)


def _alone(answer: AnswerMany, model: Model, job: Any) -> bytes:
    """``answer``'s body for one job (a batch of one), in a pool worker."""
    return answer(model, [job])[0]


async def _cached(
    request: web.Request,
    endpoint: str,
    key: str,
    compute: Callable[[], Awaitable[bytes]],
    now: Callable[[], Awaitable[bytes]] | None = None,
) -> web.Response:
    """Serve the cached JSON body for ``key`` or compute (an encoded body), store and serve it.

    ``now``, when given, computes the body on the loop instead (a sub-millisecond text query, batched
    with the others of its loop iteration by :mod:`engine.querybatch`): no worker hop, no coalescing
    task, and no pool thread contending for the GIL with the loop.
    """
    cache = request.app[CACHE]
    metrics = request.app[METRICS]
    body = await cache.get(key)
    if body is not None:
        metrics.cache_result(endpoint, hit=True)
        return web.Response(body=body, content_type=JSON)
    if now is not None:
        body = await now()
        cache.put(key, body)
        metrics.cache_result(endpoint, hit=False)
        return web.Response(body=body, content_type=JSON)

    async def compute_and_store() -> bytes:
        value = await compute()
        await cache.set(key, value)
        return value

    body, shared = await request.app[RUNTIME].flight.run(key, compute_and_store)
    metrics.cache_result(endpoint, hit=False)
    if shared:
        metrics.coalesced.labels(endpoint=endpoint).inc()
    return web.Response(body=body, content_type=JSON)


async def _text(request: web.Request, endpoint: str, key: str, answer: AnswerMany, model: Model, job: Any,
                rows: int, filtered: bool = False, narrow: bool = False) -> web.Response:
    """A text endpoint's cached answer: computed on the loop (batched) or in the text pool.

    A query with a word to correct goes to the pool whatever the bundle's size: a spelling search costs
    up to ~1 ms a word, more than the loop may spend on one request while others wait.
    """
    runtime = request.app[RUNTIME]
    inline = runtime.inline(rows, filtered, narrow) and not model.space.spells(job.query)
    now = functools.partial(runtime.queries.run, answer, model, job) if inline else None
    return await _cached(request, endpoint, key, lambda: runtime.text.run(_alone, answer, model, job), now)


async def related(request: web.Request) -> web.Response:
    """Words near the query."""
    runtime = request.app[RUNTIME]
    query = runtime.parse(request.query.get("q", ""))
    k = k_param(request)
    with runtime.holder.use() as model:
        key = cache_key(model.version, "related", query.normalised(), k)
        job = service.WordJob(query, k)
        return await _text(request, "related", key, service.related, model, job, len(model.space.words),
                           narrow=True)


def _lang(request: web.Request) -> str | None:
    """The ``lang`` filter of a request (a language code such as ``en`` or ``pt-br``), or None."""
    lang = request.query.get("lang", "").strip().lower() or None
    if lang is not None and not LANG_CODE.fullmatch(lang):
        raise BadParameter(f"lang must be a language code such as 'en', got {lang[:20]!r}.")
    return lang


def _lang_key(lang: str | None, known: Collection[str]) -> str | None:
    """The language as the cache knows it: every language the bundle lacks answers alike, so it shares one
    key (otherwise each made-up code would fill the cache with copies of one answer)."""
    return lang if lang is None or lang in known else "-"


async def images(request: web.Request) -> web.Response:
    """Images near the query."""
    runtime = request.app[RUNTIME]
    settings = request.app[SETTINGS]
    query = runtime.parse(request.query.get("q", ""))
    k = k_param(request)
    offset = _int(request, "offset", 0, 0, settings.max_offset)
    lang = _lang(request)
    with runtime.holder.use() as model:
        key = cache_key(model.version, "images", query.normalised(), k, offset, _lang_key(lang, model.langs))
        job = service.ImageJob(query, k, offset, lang, settings.confident_cutoff)
        return await _text(request, "images", key, service.images, model, job, len(model.image_vectors),
                           filtered=lang is not None)


async def _upload(request: web.Request) -> bytes:
    """The image bytes: the raw body, or the multipart field ``image``; a malformed body is a BadImage."""
    try:
        return await _read_upload(request)
    except (ValueError, HttpProcessingError, RequestPayloadError) as exc:
        # aiohttp raises these for a multipart body without (or missing) its boundary, or a body that
        # does not match its Content-Encoding: the client's fault, not a 500.
        reason = str(exc).strip().splitlines()[-1].strip()[:200] if str(exc).strip() else type(exc).__name__
        raise BadImage(f"The request body could not be read: {reason}") from exc


class _Capped:
    """The request body as the multipart reader reads it, at most ``limit`` bytes of it (decoded) in all.

    aiohttp's reader drains every part it skips (and any preamble) with no bound of its own; through this
    wrapper, other fields, a preamble or a decompressed body beyond the limit end the upload with a 413.
    """

    def __init__(self, content: Any, limit: int) -> None:
        self.content = content
        self.limit = limit
        self.seen = 0

    def _count(self, data: bytes) -> bytes:
        self.seen += len(data)
        if self.seen > self.limit:
            raise ImageTooLarge(f"The request body is over {self.limit:,} bytes.")
        return data

    async def read(self, n: int = -1) -> bytes:
        return self._count(await self.content.read(n))

    async def readline(self, **kwargs: Any) -> bytes:
        return self._count(await self.content.readline(**kwargs))

    def at_eof(self) -> bool:
        return bool(self.content.at_eof())

    def unread_data(self, data: bytes) -> None:
        self.seen -= len(data)
        self.content.unread_data(data)


async def _read_upload(request: web.Request) -> bytes:
    """The raw body or the multipart field ``image``, within the upload limit."""
    limit = request.app[SETTINGS].max_upload_bytes
    if request.content_type.startswith("multipart/"):
        budget = limit + FRAMING_BYTES
        if request.content_length is not None and request.content_length > budget:
            raise ImageTooLarge(f"The request body is {request.content_length:,} bytes; at most {budget:,}.")
        reader = MultipartReader(request.headers, cast(StreamReader, _Capped(request.content, budget)))
        async for part in reader:
            if not isinstance(part, BodyPartReader):
                raise BadImage("Nested multipart bodies are not accepted: send one field named 'image'.")
            data = bytearray()
            while chunk := await part.read_chunk(1 << 16):  # other fields are read (capped) and dropped
                if part.name == "image":
                    data.extend(chunk)
                    if len(data) > limit:
                        raise ImageTooLarge(f"The file is over {limit:,} bytes.")
            if part.name == "image":
                return bytes(data)
        raise BadImage("The multipart body has no field named 'image'.")
    body = await request.read()
    if len(body) > limit:
        raise ImageTooLarge(f"The file is {len(body):,} bytes; at most {limit:,} are accepted.")
    if not body:
        raise BadImage("The request body is empty: send the image bytes (or a multipart field 'image').")
    return body


async def _photo(request: web.Request, endpoint: str) -> web.Response:
    runtime = request.app[RUNTIME]
    settings = request.app[SETTINGS]
    k = k_param(request)
    lang = _lang(request) if endpoint == "hashtags" else None
    # Admitted before a byte of the body is read: a full photo queue answers at once, and a client that
    # stalls mid-body gives its slot back after upload_timeout_s.
    with runtime.uploading(request.remote or "?"):
        try:
            async with asyncio.timeout(settings.upload_timeout_s):
                data = await _upload(request)
        except TimeoutError:
            raise SlowUpload(f"The upload did not arrive within {settings.upload_timeout_s:g} s.") from None
    answer = functools.partial(service.hashtags, lang=lang) if endpoint == "hashtags" else service.similar
    digest = hashlib.sha256(data).hexdigest()
    with runtime.holder.use() as model:
        # Hashtags depend on the language only where the bundle's hashtag model has per-language words.
        known = model.hashtagger.languages if model.hashtagger is not None else ()
        lang_key = _lang_key(lang, known)
        key = cache_key(model.version, endpoint, digest, k, *([lang_key] if lang_key else []))

        async def compute() -> bytes:
            # Decode in the image pool, encode in a batch with concurrent photos, answer in the pool. The
            # same photo asked concurrently with another k (or endpoint) shares one encoding.
            vec, shared = await runtime.vectors.run(f"{model.version}:{digest}", lambda: runtime.encode_photo(
                model, data, settings.max_upload_bytes, settings.max_pixels))
            if shared:
                request.app[METRICS].coalesced.labels(endpoint="encode").inc()
            return await runtime.images.run(answer, model, vec, k)

        return await _cached(request, endpoint, key, compute)


async def hashtags(request: web.Request) -> web.Response:
    """Words for a photo."""
    return await _photo(request, "hashtags")


async def similar(request: web.Request) -> web.Response:
    """Images like a photo."""
    return await _photo(request, "similar")


async def image_file(request: web.Request) -> web.StreamResponse:
    """An image of the corpus, or (``?size=N``) a JPEG thumbnail bounded by N pixels."""
    runtime = request.app[RUNTIME]
    settings = request.app[SETTINGS]
    image_id = request.match_info["id"]
    size = _int(request, "size", 0, 0, 100_000)
    with runtime.holder.use() as model:
        key = model.row_of(image_id)
        if key is None:
            raise NotFound(f"No image {image_id!r} in bundle {model.version}.")
        path = Path(model.items[key]["path"])
    if not path.is_file():
        raise NotFound(f"The file of image {image_id!r} is not on this server.")
    if not size:
        return web.FileResponse(path, headers=IMAGE_HEADERS)
    side = max(MIN_THUMB, min(size, settings.thumb_max))
    body = await runtime.images.run(thumbnail_jpeg, path, side)
    return web.Response(body=body, content_type="image/jpeg", headers=IMAGE_HEADERS)


async def stats(request: web.Request) -> web.Response:
    """Corpus, filter and report statistics of the active bundle."""
    runtime = request.app[RUNTIME]
    with runtime.holder.use() as model:
        return web.json_response(public(await runtime.text.run(service.stats, model)))


def report_target(root: Path, name: str) -> Path | None:
    """The regular file ``name`` names inside the folder ``root``, symlinks followed; None otherwise.

    Refused: an empty, ``.`` or ``..`` part, a NUL byte or backslash, a part longer than a file name may
    be, a missing file, a symlink loop, and anything that resolves outside ``root``.
    """
    parts = name.split("/")
    if any(p in ("", ".", "..") or "\0" in p or "\\" in p or len(p.encode()) > 255 for p in parts):
        return None
    try:
        real_root = root.resolve(strict=True)
        target = root.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError, ValueError):  # missing, a symlink loop, a name the system refuses
        return None
    return target if target.is_relative_to(real_root) and target.is_file() else None


async def report_file(request: web.Request) -> web.StreamResponse:
    """A file from the bundle's ``report/`` (no path may leave that folder)."""
    runtime = request.app[RUNTIME]
    name = request.match_info["name"]
    with runtime.holder.use() as model:
        root = model.path / bundle.REPORT_DIR
    target = report_target(root, name)
    if target is None:
        raise NotFound(f"No report file {name[:100]!r}.")
    if target.suffix == ".json":  # the report's JSON may name server paths (the layout's image files)
        body = await runtime.text.run(_public_json, target)
        if body is not None:
            return web.Response(body=body, content_type=JSON)
    return web.FileResponse(target)


def _public_json(path: Path) -> bytes | None:
    """A report JSON file as the public may see it (:mod:`engine.public`); None when it is so already."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not JSON after all: served as the file it is
    shown = public(data)
    return None if shown == data else json.dumps(shown, ensure_ascii=False).encode("utf-8")


async def healthz(request: web.Request) -> web.Response:
    """Liveness: always 200; ``status`` is ``degraded`` while no bundle is loaded."""
    runtime = request.app[RUNTIME]
    cache = request.app[CACHE]
    model = runtime.holder.current
    return web.json_response({
        "status": "ok" if model is not None else "degraded",
        "version": model.version if model else None,
        "cache": cache.kind,
        "cache_up": cache.up,
        "bus_up": request.app[BUS].up,
        "pid": os.getpid(),  # which engine process answered (several may share the port)
        "topicspace_version": __version__,  # the software's (``version`` is the served bundle's)
    })


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition."""
    m = request.app[METRICS]
    return web.Response(body=m.render(), headers={"Content-Type": m.content_type})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 description of this API."""
    return web.json_response(spec())


def _require_admin(request: web.Request) -> None:
    """Refuse unless ``Authorization: Bearer <ENGINE_ADMIN_TOKEN>`` (constant-time compare)."""
    token = request.app[SETTINGS].admin_token
    if not token:
        raise AdminDisabled("Admin endpoints are disabled: no ENGINE_ADMIN_TOKEN is configured.")
    given = request.headers.get("Authorization", "")
    expected = f"Bearer {token}"
    # aiohttp decodes header bytes that are not UTF-8 into surrogates ("\xff" → "\udcff"): surrogateescape
    # turns them back into the bytes the client sent instead of raising.
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
        raise Unauthorized("A valid 'Authorization: Bearer <token>' header is required.")


async def admin_reload(request: web.Request) -> web.Response:
    """Switch to the ACTIVE bundle (or ``?version=``); needs ``Authorization: Bearer <token>``."""
    _require_admin(request)
    runtime = request.app[RUNTIME]
    previous = runtime.holder.current.version if runtime.holder.current else None
    version = request.query.get("version") or None
    model = await runtime.reload(version, force=request.query.get("force") in ("1", "true"))
    await request.app[BUS].publish(model.version)  # the other replicas switch too
    return web.json_response({"version": model.version, "previous": previous})


async def admin_versions(request: web.Request) -> web.Response:
    """The published bundles, newest first, with the active and the served one marked (admin)."""
    _require_admin(request)
    models = request.app[SETTINGS].models_dir
    runtime = request.app[RUNTIME]
    served = runtime.holder.current.version if runtime.holder.current else None
    # Why the last bundle was refused (paths, file names): for admins only, never on /healthz.
    return web.json_response({"active": bundle.active_version(models), "served": served,
                              "versions": bundle.summaries(models), "last_error": runtime.holder.last_error})


async def admin_activate(request: web.Request) -> web.Response:
    """Make ``?version=`` the ACTIVE bundle (a rollback survives restarts) and serve it (admin)."""
    _require_admin(request)
    version = request.query.get("version", "")
    models = request.app[SETTINGS].models_dir
    if version not in bundle.list_versions(models):
        raise UnknownVersion(f"No bundle named {version!r}.")
    runtime = request.app[RUNTIME]
    previous = runtime.holder.current.version if runtime.holder.current else None
    model = await runtime.reload(version, force=True)  # verified before ACTIVE moves
    bundle.activate(models, version)
    await request.app[BUS].publish(model.version)  # the other replicas switch too
    return web.json_response({"version": model.version, "previous": previous})


def setup_admin_routes(app: web.Application) -> None:
    """The admin endpoints (on the API port, or on the internal port alone: :mod:`engine.probes`)."""
    app.router.add_post("/v1/admin/reload", admin_reload)
    app.router.add_get("/v1/admin/versions", admin_versions)
    app.router.add_post("/v1/admin/activate", admin_activate)


def setup_routes(app: web.Application) -> None:
    """Register every route."""
    app.router.add_get("/v1/related", related)
    app.router.add_get("/v1/images", images)
    app.router.add_get("/v1/images/{id}", image_file)
    app.router.add_post("/v1/hashtags", hashtags)
    app.router.add_post("/v1/similar", similar)
    app.router.add_get("/v1/stats", stats)
    app.router.add_get("/v1/report/{name:.+}", report_file)
    setup_admin_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)
