"""Reference answers of the engine's endpoints as plain dicts: a full exact sort over every row.

What ``json.dumps`` of these writes is what the engine's pre-encoded bodies must write byte for byte on a
bundle ranked exactly (``space.vectorindex.exact_for``). Scores come from the same product shape as the
engine's (one query as a batch of one), and equal scores rank in row order, as there.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.model import Model
from space.errors import UnknownWords
from space.query import Query
from space.textspace import unit


def _ranking(rows: np.ndarray, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sims = (vec[None] @ rows.T)[0]
    order = np.argsort(-sims, kind="stable")
    return order, sims[order]


def _images(model: Model, keys: np.ndarray, sims: np.ndarray) -> list[dict[str, Any]]:
    pairs = zip(keys.tolist(), sims.tolist(), strict=True)
    return [{**model.hits[key], "score": round(sim, 4)} for key, sim in pairs]


def _words(model: Model, vec: np.ndarray, k: int, exclude: set[str]) -> list[dict[str, Any]]:
    keys, sims = _ranking(model.space.unit_vectors, unit(vec))
    words = model.space.words
    found = [(words[key], sim) for key, sim in zip(keys.tolist(), sims.tolist(), strict=True)
             if words[key] not in exclude]
    return [{"word": word, "score": round(float(sim), 4)} for word, sim in found[:k]]


def images(model: Model, query: Query, k: int, offset: int = 0, lang: str | None = None,
           cutoff: float = 0.5) -> dict[str, Any]:
    """``/v1/images``: the query's images ``offset`` to ``offset + k`` (of ``lang`` when given)."""
    try:
        vec, unknown = model.text_query(query)
    except UnknownWords as exc:
        return {"images": [], "unknown": exc.unknown, "confident": False, "version": model.version}
    rows = np.arange(len(model.items)) if lang is None else model.langs.get(lang, np.empty(0, dtype=np.int64))
    assert model.search_vectors is not None
    keys, sims = _ranking(model.search_vectors[rows], vec)
    hits = _images(model, rows[keys][offset:offset + k], sims[offset:offset + k])
    answer = {"images": hits, "unknown": unknown, "confident": bool(hits) and float(sims[0]) >= cutoff}
    return {**answer, **_corrected(model, query), "version": model.version}


def _corrected(model: Model, query: Query) -> dict[str, Any]:
    corrected = model.space.corrections(query)
    return {"corrected": corrected} if corrected else {}


def related(model: Model, query: Query, k: int) -> dict[str, Any]:
    """``/v1/related``: the ``k`` words nearest to the query, its own words left out."""
    try:
        vec, unknown = model.space.embed_query(query)
    except UnknownWords as exc:
        return {"words": [], "unknown": exc.unknown, "version": model.version}
    return {"words": _words(model, vec, k, model.space.query_words(query)), "unknown": unknown,
            **_corrected(model, query), "version": model.version}


def hashtags(model: Model, raw: np.ndarray, k: int) -> dict[str, Any]:
    """``/v1/hashtags``: the bundle's hashtag model on a photo's raw vector (its neighbours among all the
    voting posts, sorted), else the ``k`` words nearest to it."""
    tagger = model.hashtagger
    if tagger is None or model.pool_vectors is None:
        return {"hashtags": _words(model, raw, k, set()), "version": model.version}
    near, sims = _ranking(model.pool_vectors, unit(raw))
    best = tagger.best(tagger.scores(raw, tagger.pool[near], sims), model.space.words, k)
    return {"hashtags": [{"word": w, "score": round(s, 4)} for w, s in best], "version": model.version}


def similar(model: Model, raw: np.ndarray, k: int) -> dict[str, Any]:
    """``/v1/similar``: the ``k`` images nearest to a photo's raw vector."""
    keys, sims = _ranking(model.image_vectors, model.image_query(raw))
    return {"images": _images(model, keys[:k], sims[:k]), "version": model.version}
