"""The engine's answers, as plain blocking functions of a loaded :class:`~engine.model.Model`.

Views run these in the worker pool. A query whose words are all unknown is not an error: it answers
empty results with the ``unknown`` list, so clients can say "unknown: …" (the same shape as a partly
known query).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.model import Model
from space import bundle
from space.errors import UnknownWords
from space.images import load_for_network
from space.query import Query
from space.textspace import unit
from space.vectorindex import nearest

TOP_WORDS = 30
_NO_KEYS = np.empty(0, dtype=np.int64)
_NO_SIMS = np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class ImageLimits:
    """Upload limits handed to the safe image loader."""

    max_bytes: int
    max_pixels: int


def _round(x: float) -> float:
    return round(float(x), 4)


def _image_hits(model: Model, keys: np.ndarray, sims: np.ndarray) -> list[dict[str, Any]]:
    templates = model.hits
    n = len(templates)
    return [
        {**templates[key], "score": round(sim, 4)}
        for key, sim in zip(keys.tolist(), sims.tolist(), strict=True)
        if 0 <= key < n
    ]


def _embed(model: Model, query: Query, for_images: bool = False) -> tuple[np.ndarray | None, list[str]]:
    try:
        return model.text_query(query) if for_images else model.space.embed_query(query)
    except UnknownWords as exc:
        return None, exc.unknown


def _without(
    model: Model, keys: np.ndarray, sims: np.ndarray, exclude: set[str], k: int
) -> list[tuple[int, float]]:
    """The first ``k`` of ``keys``/``sims`` that are words of the space and not in ``exclude``."""
    words = model.space.words
    out = [
        (key, sim)
        for key, sim in zip(keys.tolist(), sims.tolist(), strict=True)
        if 0 <= key < len(words) and words[key] not in exclude
    ]
    return out[:k]


def _word_hits(model: Model, vec: np.ndarray, k: int, exclude: set[str]) -> list[tuple[int, float]]:
    """Keys and scores of the ``k`` words nearest to ``vec`` (cosine), skipping ``exclude``."""
    [(keys, sims)] = nearest(model.words_index, model.space.unit_vectors, unit(vec)[None], [k + len(exclude)])
    return _without(model, keys, sims, exclude, k)


def nearest_words(model: Model, vec: np.ndarray, k: int, exclude: set[str]) -> list[dict[str, Any]]:
    """The ``k`` words nearest to ``vec`` (cosine, via ``words.usearch``), skipping ``exclude``."""
    words = model.space.words
    return [{"word": words[key], "score": _round(sim)} for key, sim in _word_hits(model, vec, k, exclude)]


def related(model: Model, query: Query, k: int) -> dict[str, Any]:
    """Words near the query's vector (the query's own words excluded)."""
    vec, unknown = _embed(model, query)
    words = [] if vec is None else nearest_words(model, vec, k, model.space.query_words(query))
    return {"words": words, "unknown": unknown, "version": model.version}


def _json_list(words: list[str]) -> str:
    return json.dumps(words, ensure_ascii=False) if words else "[]"


def _related_json(model: Model, found: list[tuple[int, float]], unknown: list[str]) -> bytes:
    parts = model.word_json
    words = [parts[key] + _score(sim) + "}" for key, sim in found]
    return (
        '{"words": [' + ", ".join(words) + '], "unknown": ' + _json_list(unknown)
        + ', "version": ' + json.dumps(model.version, ensure_ascii=False) + "}"
    ).encode("utf-8")


def related_body(model: Model, query: Query, k: int) -> bytes:
    """:func:`related` as its JSON body, byte for byte, from the model's pre-encoded words."""
    vec, unknown = _embed(model, query)
    found = [] if vec is None else _word_hits(model, vec, k, model.space.query_words(query))
    return _related_json(model, found, unknown)


def related_bodies(model: Model, jobs: Sequence[tuple[Query, int]]) -> list[bytes]:
    """:func:`related_body` for each ``(query, k)``, the nearest words of all of them found together."""
    embedded = [_embed(model, query) for query, _ in jobs]
    excluded = [model.space.query_words(query) for query, _ in jobs]
    asked = [i for i, (vec, _) in enumerate(embedded) if vec is not None]
    vecs = [unit(embedded[i][0]) for i in asked]  # type: ignore[arg-type]
    ns = [jobs[i][1] + len(excluded[i]) for i in asked]
    found = nearest(model.words_index, model.space.unit_vectors, np.stack(vecs), ns) if vecs else []
    hits = dict(zip(asked, found, strict=True))
    bodies = []
    for i, (_, k) in enumerate(jobs):
        keys, sims = hits.get(i, (_NO_KEYS, _NO_SIMS))
        bodies.append(_related_json(model, _without(model, keys, sims, excluded[i], k), embedded[i][1]))
    return bodies


def _page(keys: np.ndarray, sims: np.ndarray, offset: int) -> tuple[np.ndarray, np.ndarray, float]:
    """The hits after ``offset`` and the best score of all of them (-1 when there are none)."""
    return keys[offset:], sims[offset:], float(sims[0]) if len(sims) else -1.0


def _image_answer(
    model: Model, query: Query, k: int, offset: int, lang: str | None
) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
    """The answer's keys and scores (after ``offset``), the best score (-1 when none) and unknown words."""
    vec, unknown = _embed(model, query, for_images=True)
    if vec is None:
        return _NO_KEYS, _NO_SIMS, -1.0, unknown
    if lang:
        # Exact over the language's rows: a filtered graph search could return too few.
        rows = model.langs.get(lang, np.empty(0, dtype=np.int64))
        scores = model.image_vectors[rows] @ vec
        order = np.argsort(-scores, kind="stable")[: offset + k]
        keys, sims = rows[order], scores[order]
    else:
        [(keys, sims)] = nearest(model.images_index, model.image_vectors, vec[None], [offset + k])
    return (*_page(keys, sims, offset), unknown)


def images(
    model: Model, query: Query, k: int, offset: int, lang: str | None, cutoff: float
) -> dict[str, Any]:
    """Images near the query's vector; ``confident`` says whether the best score clears ``cutoff``."""
    keys, sims, best, unknown = _image_answer(model, query, k, offset, lang)
    hits = _image_hits(model, keys, sims)
    return {
        "images": hits,
        "unknown": unknown,
        "confident": bool(hits) and best >= cutoff,
        "version": model.version,
    }


def _score(x: float) -> str:
    """A score as ``json.dumps`` writes ``round(x, 4)``."""
    r = round(x, 4)
    return repr(r) if math.isfinite(r) else json.dumps(r)


def _images_json(
    model: Model, keys: np.ndarray, sims: np.ndarray, best: float, unknown: list[str], cutoff: float
) -> bytes:
    parts = model.hit_json
    n = len(parts)
    pairs = zip(keys.tolist(), sims.tolist(), strict=True)
    if np.isfinite(sims).all():  # always, in practice: repr is what json.dumps writes for a finite float
        hits = [f"{parts[key][0]}{round(sim, 4)!r}{parts[key][1]}" for key, sim in pairs if 0 <= key < n]
    else:
        hits = [parts[key][0] + _score(sim) + parts[key][1] for key, sim in pairs if 0 <= key < n]
    confident = "true" if hits and best >= cutoff else "false"
    version = json.dumps(model.version, ensure_ascii=False)
    return (
        '{"images": [' + ", ".join(hits) + '], "unknown": ' + _json_list(unknown)
        + ', "confident": ' + confident + ', "version": ' + version + "}"
    ).encode("utf-8")


def images_body(
    model: Model, query: Query, k: int, offset: int, lang: str | None, cutoff: float
) -> bytes:
    """:func:`images` as its JSON body, byte for byte, from the model's pre-encoded hit templates."""
    keys, sims, best, unknown = _image_answer(model, query, k, offset, lang)
    return _images_json(model, keys, sims, best, unknown, cutoff)


@dataclass(frozen=True)
class ImageJob:
    """One unfiltered text → images query of a batch (:func:`images_bodies`)."""

    query: Query
    k: int
    offset: int
    cutoff: float


def images_bodies(model: Model, jobs: Sequence[ImageJob]) -> list[bytes]:
    """:func:`images_body` (no language filter) for each job, the nearest images of all found together."""
    embedded = [_embed(model, job.query, for_images=True) for job in jobs]
    asked = [i for i, (vec, _) in enumerate(embedded) if vec is not None]
    vecs = [embedded[i][0] for i in asked]
    ns = [jobs[i].offset + jobs[i].k for i in asked]
    found = nearest(model.images_index, model.image_vectors, np.stack(vecs), ns) if vecs else []  # type: ignore[arg-type]
    hits = dict(zip(asked, found, strict=True))
    bodies = []
    for i, job in enumerate(jobs):
        keys, sims, best = _page(*hits.get(i, (_NO_KEYS, _NO_SIMS)), job.offset)
        bodies.append(_images_json(model, keys, sims, best, embedded[i][1], job.cutoff))
    return bodies


def encode_image(model: Model, data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode untrusted bytes safely and place the image in the space (the encoder's raw vector)."""
    x = load_for_network(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    return model.encode(x[None])[0]


def hashtags(model: Model, vec: np.ndarray, k: int) -> dict[str, Any]:
    """Words nearest to an image's raw vector (uncentred: measured better for words on Flickr8k)."""
    return {"hashtags": nearest_words(model, vec, k, set()), "version": model.version}


def similar(model: Model, vec: np.ndarray, k: int) -> dict[str, Any]:
    """Images nearest to an image's raw vector."""
    [(keys, sims)] = nearest(model.images_index, model.image_vectors, model.image_query(vec)[None], [k])
    return {"images": _image_hits(model, keys, sims), "version": model.version}


def stats(model: Model) -> dict[str, Any]:
    """Corpus and filter statistics of the bundle, plus its ``report/stats.json`` when present."""
    manifest = model.manifest
    report_dir = model.path / bundle.REPORT_DIR
    report: dict[str, Any] = {}
    stats_file = report_dir / "stats.json"
    if stats_file.is_file():
        report = json.loads(stats_file.read_text(encoding="utf-8"))
    filter_report = manifest.get("filter_report") or {}
    languages = filter_report.get("languages") or {k: len(v) for k, v in model.langs.items()}
    top = np.argsort(-model.space.counts, kind="stable")[:TOP_WORDS]
    top_words = report.get("top_words") or [
        {"word": model.space.words[i], "count": int(model.space.counts[i])} for i in top.tolist()
    ]
    files = sorted(
        p.relative_to(report_dir).as_posix() for p in report_dir.rglob("*") if p.is_file()
    ) if report_dir.is_dir() else []
    return {
        "version": model.version,
        "created": manifest.get("created"),
        "n_images": len(model.items),
        "n_words": len(model.space.words),
        "filter_report": filter_report,
        "corpus": manifest.get("corpus"),
        "metrics": manifest.get("metrics") or {},
        "languages": languages,
        "top_words": top_words,
        "report": report,
        "report_files": files,
    }
