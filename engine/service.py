"""The engine's answers, as plain blocking functions of a loaded :class:`~engine.model.Model`.

Views run these in the worker pool. A query whose words are all unknown is not an error: it answers
empty results with the ``unknown`` list, so clients can say "unknown: …" (the same shape as a partly
known query).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.model import Model
from space import bundle
from space.errors import UnknownWords
from space.images import load_for_network
from space.query import Query
from space.textspace import unit
from space.vectorindex import EXACT_BELOW, is_quantised, search

TOP_WORDS = 30


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


def _nearest(index: Any, unit_rows: np.ndarray, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows by cosine: numpy for small sets (faster than any index there), else usearch."""
    if len(unit_rows) > EXACT_BELOW:
        # i8 indexes lose recall on crowded vectors: rescore 4× candidates against the float rows.
        return search(index, vec, k, rerank=unit_rows if is_quantised(index) else None)
    k = min(k, len(unit_rows))
    if k <= 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
    sims = unit_rows @ vec
    top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
    top = top[np.argsort(-sims[top], kind="stable")]
    return top, sims[top]


def _embed(model: Model, query: Query, for_images: bool = False) -> tuple[np.ndarray | None, list[str]]:
    try:
        return model.text_query(query) if for_images else model.space.embed_query(query)
    except UnknownWords as exc:
        return None, exc.unknown


def _word_hits(model: Model, vec: np.ndarray, k: int, exclude: set[str]) -> list[tuple[int, float]]:
    """Keys and scores of the ``k`` words nearest to ``vec`` (cosine), skipping ``exclude``."""
    keys, sims = _nearest(model.words_index, model.space.unit_vectors, unit(vec), k + len(exclude))
    words = model.space.words
    out = [
        (key, sim)
        for key, sim in zip(keys.tolist(), sims.tolist(), strict=True)
        if 0 <= key < len(words) and words[key] not in exclude
    ]
    return out[:k]


def nearest_words(model: Model, vec: np.ndarray, k: int, exclude: set[str]) -> list[dict[str, Any]]:
    """The ``k`` words nearest to ``vec`` (cosine, via ``words.usearch``), skipping ``exclude``."""
    words = model.space.words
    return [{"word": words[key], "score": _round(sim)} for key, sim in _word_hits(model, vec, k, exclude)]


def related(model: Model, query: Query, k: int) -> dict[str, Any]:
    """Words near the query's vector (the query's own words excluded)."""
    vec, unknown = _embed(model, query)
    words = [] if vec is None else nearest_words(model, vec, k, model.space.query_words(query))
    return {"words": words, "unknown": unknown, "version": model.version}


def related_body(model: Model, query: Query, k: int) -> bytes:
    """:func:`related` as its JSON body, byte for byte, from the model's pre-encoded words."""
    vec, unknown = _embed(model, query)
    parts = model.word_json
    found = [] if vec is None else _word_hits(model, vec, k, model.space.query_words(query))
    words = [parts[key] + _score(sim) + "}" for key, sim in found]
    return (
        '{"words": [' + ", ".join(words) + '], "unknown": ' + json.dumps(unknown, ensure_ascii=False)
        + ', "version": ' + json.dumps(model.version, ensure_ascii=False) + "}"
    ).encode("utf-8")


def _image_answer(
    model: Model, query: Query, k: int, offset: int, lang: str | None
) -> tuple[np.ndarray, np.ndarray, float, list[str]]:
    """The answer's keys and scores (after ``offset``), the best score (-1 when none) and unknown words."""
    vec, unknown = _embed(model, query, for_images=True)
    if vec is None:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32), -1.0, unknown
    if lang:
        # Exact over the language's rows: a filtered graph search could return too few.
        rows = model.langs.get(lang, np.empty(0, dtype=np.int64))
        scores = model.image_vectors[rows] @ vec
        order = np.argsort(-scores, kind="stable")[: offset + k]
        keys, sims = rows[order], scores[order]
    else:
        keys, sims = _nearest(model.images_index, model.image_vectors, vec, offset + k)
    best = float(sims[0]) if len(sims) else -1.0
    return keys[offset:], sims[offset:], best, unknown


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


def images_body(
    model: Model, query: Query, k: int, offset: int, lang: str | None, cutoff: float
) -> bytes:
    """:func:`images` as its JSON body, byte for byte, from the model's pre-encoded hit templates."""
    keys, sims, best, unknown = _image_answer(model, query, k, offset, lang)
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
        '{"images": [' + ", ".join(hits) + '], "unknown": ' + json.dumps(unknown, ensure_ascii=False)
        + ', "confident": ' + confident + ', "version": ' + version + "}"
    ).encode("utf-8")


def encode_image(model: Model, data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode untrusted bytes safely and place the image in the space (the encoder's raw vector)."""
    x = load_for_network(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    return model.encode(x[None])[0]


def hashtags(model: Model, vec: np.ndarray, k: int) -> dict[str, Any]:
    """Words nearest to an image's raw vector (uncentred: measured better for words on Flickr8k)."""
    return {"hashtags": nearest_words(model, vec, k, set()), "version": model.version}


def similar(model: Model, vec: np.ndarray, k: int) -> dict[str, Any]:
    """Images nearest to an image's raw vector."""
    keys, sims = _nearest(model.images_index, model.image_vectors, model.image_query(vec), k)
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
