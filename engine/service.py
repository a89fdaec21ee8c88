"""The engine's answers, as plain blocking functions of a loaded :class:`~engine.model.Model`.

Each endpoint has one answer function, written as its JSON body from the model's pre-encoded hit templates
(byte-identical to ``json.dumps`` of the answer). The text endpoints answer a batch of jobs (one alone is a
batch of one): on the event loop :mod:`engine.querybatch` hands them every query of a loop iteration, in
the pool they get one. Rows are ranked by :func:`space.vectorindex.nearest` only, so a query ranks the same
on either path and for every page. A query whose words are all unknown is not an error: it answers empty
results with the ``unknown`` list, so clients can say "unknown: …" (the same shape as a partly known query).
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.model import Model
from space import bundle
from space.errors import UnknownWords
from space.hashtags import NEIGHBOURS
from space.images import load_for_network
from space.query import Query
from space.textspace import unit
from space.vectorindex import Ranked, exact_for, nearest

TOP_WORDS = 30
_NO_KEYS = np.empty(0, dtype=np.int64)
_NO_SIMS = np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class ImageLimits:
    """Upload limits handed to the safe image loader."""

    max_bytes: int
    max_pixels: int


@dataclass(frozen=True)
class ImageJob:
    """One text → images query: hits ``offset`` to ``offset + k`` of the query's ranking, over the images
    of ``lang`` only when given; ``confident`` says whether the best score clears ``cutoff``."""

    query: Query
    k: int
    offset: int = 0
    lang: str | None = None
    cutoff: float = 0.5


@dataclass(frozen=True)
class WordJob:
    """One text → words query: the ``k`` words nearest to it, its own words left out."""

    query: Query
    k: int


def _embed(model: Model, query: Query, for_images: bool = False) -> tuple[np.ndarray | None, list[str]]:
    try:
        return model.text_query(query) if for_images else model.space.embed_query(query)
    except UnknownWords as exc:
        return None, exc.unknown


def _score(x: float) -> str:
    """A score as ``json.dumps`` writes ``round(x, 4)``."""
    r = round(x, 4)
    return repr(r) if math.isfinite(r) else json.dumps(r)


def _json_list(words: list[str]) -> str:
    return json.dumps(words, ensure_ascii=False) if words else "[]"


def _body(fields: Iterable[tuple[str, str]]) -> bytes:
    """A JSON object from its fields' names and already encoded values."""
    return ("{" + ", ".join(f'"{name}": {value}' for name, value in fields) + "}").encode("utf-8")


def _image_hits(model: Model, keys: np.ndarray, sims: np.ndarray) -> list[str]:
    """The encoded hits of images ``keys`` with scores ``sims``."""
    parts = model.hit_json
    n = len(parts)
    pairs = zip(keys.tolist(), sims.tolist(), strict=True)
    if np.isfinite(sims).all():  # always, in practice: repr is what json.dumps writes for a finite float
        return [f"{head}{round(sim, 4)!r}{tail}" for key, sim in pairs if 0 <= key < n
                for head, tail in (parts[key],)]
    return [head + _score(sim) + tail for key, sim in pairs if 0 <= key < n for head, tail in (parts[key],)]


def _word_hits(model: Model, keys: np.ndarray, sims: np.ndarray, exclude: set[str], k: int) -> str:
    """The first ``k`` of words ``keys`` with scores ``sims`` that are not in ``exclude``, encoded."""
    words, parts = model.space.words, model.word_json
    hits = (
        parts[key] + _score(sim) + "}"
        for key, sim in zip(keys.tolist(), sims.tolist(), strict=True)
        if 0 <= key < len(words) and words[key] not in exclude
    )
    return "[" + ", ".join(itertools.islice(hits, k)) + "]"  # the k first only are written


def _version(model: Model) -> str:
    return json.dumps(model.version, ensure_ascii=False)


def images(model: Model, jobs: Sequence[ImageJob]) -> list[bytes]:
    """The ``/v1/images`` body of each job; the jobs of one language (or of none) share one search."""
    embedded = [_embed(model, job.query, for_images=True) for job in jobs]
    found: list[tuple[np.ndarray, np.ndarray]] = [(_NO_KEYS, _NO_SIMS)] * len(jobs)
    by_lang: dict[str | None, list[int]] = {}
    for i, (vec, _) in enumerate(embedded):
        if vec is not None:
            by_lang.setdefault(jobs[i].lang, []).append(i)
    for lang, asked in by_lang.items():
        vecs = np.stack([embedded[i][0] for i in asked])  # type: ignore[misc]
        ks = [jobs[i].offset + jobs[i].k for i in asked]
        hits = _search(model, lang, vecs, ks)
        for i, hit in zip(asked, hits, strict=True):
            found[i] = hit
    version = _version(model)
    bodies = []
    for job, (keys, sims), (_, unknown) in zip(jobs, found, embedded, strict=True):
        page = _image_hits(model, keys[job.offset:], sims[job.offset:])
        confident = bool(page) and float(sims[0]) >= job.cutoff
        bodies.append(_body((("images", "[" + ", ".join(page) + "]"), ("unknown", _json_list(unknown)),
                             ("confident", "true" if confident else "false"),
                             *_corrected(model, job.query), ("version", version))))
    return bodies


def _search(model: Model, lang: str | None, vecs: np.ndarray, ks: list[int]) -> list[Ranked]:
    """Text queries' rankings over every post, or over the posts of ``lang`` only.

    Filtered, a bundle ranked exactly ranks the language's own rows (kept apart at load); a larger one
    walks the language's own index (key = the bundle's row), so a filtered query costs what an unfiltered
    one does, copies nothing, and pages like it (``space.vectorindex.nearest``'s tiers).
    """
    search = model.search_vectors
    assert search is not None  # Model.__post_init__ sets it
    if lang is None:
        return nearest(model.search_index, search, vecs, ks)
    rows = model.langs.get(lang, _NO_KEYS)
    index = model.lang_indexes.get(lang)
    if index is not None and not exact_for(len(search)):
        return nearest(index, search, vecs, ks)  # keys are the bundle's rows already
    # Exact over the language's rows: kept apart at load, or (a language without an index) gathered.
    own = model.lang_vectors.get(lang)
    if own is None:
        own = np.asarray(search[rows]) if len(rows) else np.zeros((0, vecs.shape[1]), np.float32)
    return [(rows[keys], sims) for keys, sims in nearest(None, own, vecs, ks)]


def _corrected(model: Model, query: Query) -> tuple[tuple[str, str], ...]:
    """The ``corrected`` field (query words matched to another spelling) when there are any."""
    corrected = model.space.corrections(query)
    return (("corrected", json.dumps(corrected, ensure_ascii=False)),) if corrected else ()


def related(model: Model, jobs: Sequence[WordJob]) -> list[bytes]:
    """The ``/v1/related`` body of each job; all of them share one search."""
    embedded = [_embed(model, job.query) for job in jobs]
    excluded = [model.space.query_words(job.query) for job in jobs]
    asked = [i for i, (vec, _) in enumerate(embedded) if vec is not None]
    assert model.word_rows is not None  # Model.__post_init__ sets it
    found = nearest(model.words_index, model.word_rows,
                    np.stack([unit(embedded[i][0]) for i in asked]),  # type: ignore[arg-type]
                    [jobs[i].k + len(excluded[i]) for i in asked]) if asked else []
    hits = dict(zip(asked, found, strict=True))
    version = _version(model)
    bodies = []
    for i, job in enumerate(jobs):
        keys, sims = hits.get(i, (_NO_KEYS, _NO_SIMS))
        words = _word_hits(model, keys, sims, excluded[i], job.k)
        unknown = _json_list(embedded[i][1])
        bodies.append(_body((("words", words), ("unknown", unknown), *_corrected(model, job.query),
                             ("version", version))))
    return bodies


def encode_image(model: Model, data: bytes, limits: ImageLimits) -> np.ndarray:
    """Decode untrusted bytes safely and place the image in the space (the encoder's raw vector)."""
    x = load_for_network(data, model.framing, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    return model.encode(x[None])[0]


def hashtags(model: Model, vec: np.ndarray, k: int, lang: str | None = None) -> bytes:
    """The ``/v1/hashtags`` body: the bundle's hashtag model on an image's raw vector (its word head and
    its nearest training posts' captions, ``space.hashtags``), in ``lang``'s words when asked; a bundle
    without one answers the words nearest to the vector."""
    tagger = model.hashtagger
    if tagger is None or model.pool_vectors is None:
        assert model.word_rows is not None
        [(keys, sims)] = nearest(model.words_index, model.word_rows, unit(vec)[None], [k])
        return _body((("hashtags", _word_hits(model, keys, sims, set(), k)), ("version", _version(model))))
    # Keys are positions in the pool, exactly ranked or through the pool's index alike.
    query = unit(vec)[None]
    [(near, sims)] = nearest(model.pool_index, model.pool_vectors, query, [NEIGHBOURS])
    if model.pool_index is not None and not exact_for(len(model.pool_vectors)) and len(near):
        # The votes weigh each neighbour by its similarity: the exact one of its float row (40 rows read),
        # not the index's (f16) approximation of it.
        sims = (query @ np.asarray(model.pool_vectors[near]).T)[0]
        order = np.lexsort((near, -sims))
        near, sims = near[order], sims[order]
    scores = tagger.scores_at(vec, near, sims)
    words = model.space.words
    best = tagger.best(scores, words, k, lang)
    hits = "[" + ", ".join(model.word_json[model.space.index[w]] + _score(s) + "}" for w, s in best) + "]"
    return _body((("hashtags", hits), ("version", _version(model))))


def similar(model: Model, vec: np.ndarray, k: int) -> bytes:
    """The ``/v1/similar`` body: images nearest to an image's raw vector."""
    [(keys, sims)] = nearest(model.images_index, model.image_vectors, model.image_query(vec)[None], [k])
    hits = "[" + ", ".join(_image_hits(model, keys, sims)) + "]"
    return _body((("images", hits), ("version", _version(model))))


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
        "n_images": model.n_images,
        "n_words": len(model.space.words),
        "filter_report": filter_report,
        "corpus": manifest.get("corpus"),
        "metrics": manifest.get("metrics") or {},
        "languages": languages,
        "top_words": top_words,
        "report": report,
        "report_files": files,
    }
