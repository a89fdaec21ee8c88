"""The corpus filters, in order: no caption, short caption, language, prolific users, other cities,
duplicate images, unreadable images. Every drop is counted by reason; the report goes into the manifest.

A filter that makes no sense for a corpus (no user ids at all → the user filter) is skipped and listed
in ``skipped_filters``; so is one switched off in :class:`~train.config.FilterConfig`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tqdm import tqdm

from space.errors import SpaceError
from space.images import open_image
from space.tokenize import word_count, words
from train.config import FilterConfig
from train.corpus.language_cache import CHUNK, DetectionStore
from train.corpus.parallel import forked_map
from train.corpus.posts import Post
from train.corpus.topic import fold
from train.progress import ProgressCallback

log = logging.getLogger(__name__)

_NOISE = re.compile(r"(?:https?://|www\.)\S+|(?<!\w)@[\w.]+", re.IGNORECASE)

REASONS = ("no_caption", "short_caption", "language", "user", "city", "duplicate", "unreadable")
__all__ = ["REASONS", "FilterConfig", "FilterResult", "LanguageDetector", "run_filters"]


PARALLEL_MIN_TEXTS = 2_000  # fewer: starting the worker processes costs more than it saves
PARALLEL_MIN_IMAGES = 1_000
MAX_READ_BYTES = 64 << 20  # a larger photo file is hashed and decoded from disk, never read whole


SEED = 0  # langdetect samples n-grams at random: seeded, a run is reproducible


def _seed_langdetect() -> None:
    from langdetect import DetectorFactory

    DetectorFactory.seed = SEED


def _detection_key(text: str) -> str:
    # Raw text detects better than our tokens (articles and punctuation are strong cues); only
    # links, mentions and the hashtag sign are noise.
    return _NOISE.sub(" ", text or "").replace("#", " ").strip()


def _detect(key: str) -> list[tuple[str, float]]:
    from langdetect import detect_langs
    from langdetect.lang_detect_exception import LangDetectException

    try:
        return [(str(c.lang), float(c.prob)) for c in detect_langs(key)]
    except LangDetectException:
        return []


class LanguageDetector:
    """langdetect with a fixed seed and a per-text cache (repeated sentences are detected once), kept on
    disk in ``cache_dir`` when given (:mod:`train.corpus.language_cache`): a rerun detects only new texts."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        _seed_langdetect()
        self._store = DetectionStore(cache_dir) if cache_dir is not None else None
        self._cache: dict[str, list[tuple[str, float]]] = self._store.load() if self._store else {}

    def languages(self, text: str) -> list[tuple[str, float]]:
        """Candidate languages of ``text`` with their probabilities, most likely first (empty: no feature)."""
        key = _detection_key(text)
        if key not in self._cache:
            self._cache[key] = _detect(key)
        return self._cache[key]

    def warm(self, texts: Iterable[str], workers: int,
             progress: Callable[[int, int], None] | None = None) -> int:
        """Detect every text not cached yet, over ``workers`` processes, saving the detections in chunks
        when the detector has a cache folder; return how many were detected. The answers are those of
        one-by-one detection (langdetect reseeds every detection); langdetect is pure Python, about 4 ms
        a caption, and was the longest part of a quick run's filters."""
        keys = sorted({_detection_key(t) for t in texts} - self._cache.keys())
        if not keys:
            return 0
        pending: list[tuple[str, list[tuple[str, float]]]] = []
        for i, (key, found) in enumerate(zip(keys, self._detections(keys, workers), strict=True), 1):
            self._cache[key] = found
            pending.append((key, found))
            if len(pending) >= CHUNK or i == len(keys):
                if self._store is not None:
                    self._store.write(pending)
                pending = []
            if progress is not None and (i % 500 == 0 or i == len(keys)):
                progress(i, len(keys))
        return len(keys)

    def _detections(self, keys: list[str], workers: int) -> Iterator[list[tuple[str, float]]]:
        """Each key's detection, in order: in worker processes when it pays, else here."""
        return forked_map(_detect, keys, workers, PARALLEL_MIN_TEXTS)

    def pick(self, text: str, allowed: Iterable[str], min_prob: float) -> tuple[str | None, bool]:
        """(language to record, kept?): the likeliest allowed language with at least ``min_prob``."""
        found = self.languages(text)
        allowed_set = set(allowed)
        for lang, prob in found:
            if lang in allowed_set and prob >= min_prob:
                return lang, True
        return (found[0][0] if found else None), False

    def detect(self, text: str) -> str | None:
        """The likeliest language of ``text`` (ISO code), or None."""
        found = self.languages(text)
        return found[0][0] if found else None


class CityMatcher:
    """Whole-token matching of city names (multi-word names as token sequences, accents folded)."""

    def __init__(self, cities: Iterable[str]) -> None:
        self._names: set[tuple[str, ...]] = {tuple(fold(w) for w in words(c)) for c in cities}
        self._names.discard(())
        self._lengths = sorted({len(n) for n in self._names}, reverse=True)

    def find(self, text: str) -> str | None:
        """The first city named in ``text``, or None."""
        toks = [fold(w) for w in words(text)]
        for i in range(len(toks)):
            for n in self._lengths:
                cand = tuple(toks[i : i + n])
                if len(cand) == n and cand in self._names:
                    return " ".join(cand)
        return None


@dataclass
class FilterResult:
    """Kept posts (with ``lang`` set) and the report."""

    kept: list[Post]
    report: dict[str, Any]
    dropped_ids: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """`kept N of M` and a per-reason table, for the terminal."""
        r = self.report
        lines = [f"kept {r['kept']} of {r['total']}"]
        width = max(len(k) for k in REASONS)
        for reason in REASONS:
            lines.append(f"  {reason:<{width}}  {r['dropped'].get(reason, 0):>7}")
        if r.get("skipped_filters"):
            lines.append("  skipped: " + "; ".join(r["skipped_filters"]))
        if r.get("languages"):
            lines.append("  languages kept: " + ", ".join(f"{k} {v}" for k, v in r["languages"].items()))
        return "\n".join(lines)

    def save(self, path: Path) -> None:
        """Write the report as JSON."""
        path.write_text(json.dumps(self.report, ensure_ascii=False, indent=2), encoding="utf-8")


def image_check(path: Path) -> tuple[str | None, bool]:
    """(the SHA-256 of the photo's bytes, None for an empty or unreadable file; whether it decodes), from one
    read of the file. A draft decode (JPEG scales down 1/8 while decoding) is cheap and still fails on
    truncated files."""
    try:
        size = path.stat().st_size
        if size > MAX_READ_BYTES:  # hashed and decoded from the file, never held whole
            with path.open("rb") as f:
                digest = hashlib.file_digest(f, "sha256").hexdigest()
            source: bytes | Path = path
        else:
            source = path.read_bytes()
            digest = hashlib.sha256(source).hexdigest()
    except OSError:
        return None, False
    if size == 0:  # failed downloads are all "the same": the unreadable filter counts them, not duplicates
        return None, False
    try:
        open_image(source, draft=32, max_bytes=max(size, 1))
    except SpaceError:
        return digest, False
    return digest, True


def run_filters(
    posts: Sequence[Post],
    cfg: FilterConfig,
    progress: ProgressCallback | None = None,
    detector: LanguageDetector | None = None,
    workers: int | None = None,
) -> FilterResult:
    """Apply the filters in order and count every drop by reason (language detection over ``workers``
    processes; None: one per core)."""
    dropped: dict[str, list[str]] = {r: [] for r in REASONS}
    skipped: list[str] = []
    current = list(posts)

    def step(name: str, keep: Callable[[Post], Post | None], unit: str = "posts") -> None:
        nonlocal current
        out: list[Post] = []
        it: Iterable[Post] = current
        if progress is None:
            it = tqdm(current, desc=f"filter: {name}", unit=unit, leave=False)
        for i, post in enumerate(it, 1):
            kept = keep(post)
            if kept is None:
                dropped[name].append(post.id)
            else:
                out.append(kept)
            if progress is not None and i % 500 == 0:
                progress(f"filter:{name}", i, len(current), unit)
        current = out

    if cfg.drop_no_caption:
        step("no_caption", lambda p: p if p.caption and p.caption.strip() else None)
    else:
        skipped.append("no_caption (disabled)")

    if cfg.min_words > 0:
        step("short_caption", lambda p: p if word_count(p.caption) >= cfg.min_words else None)
    else:
        skipped.append("short_caption (disabled)")

    if cfg.languages:
        det = detector or LanguageDetector()
        allowed = set(cfg.languages)
        unknown = [p.caption for p in current if not p.lang]
        bar = tqdm(total=len(unknown), desc="filter: detecting languages", unit="posts", leave=False,
                   disable=progress is not None)

        def detected(done: int, total: int) -> None:
            bar.update(done - bar.n)
            if progress is not None:
                progress("filter:language", done, total, "posts")

        fresh = det.warm(unknown, workers or os.cpu_count() or 1, detected)
        bar.close()
        log.info("languages: %d captions, %d detected now (the others cached)", len(unknown), fresh)

        def by_language(p: Post) -> Post | None:
            if p.lang:  # the corpus says which language the post is in (a posts.jsonl "lang"): trust it
                return p if p.lang in allowed else None
            lang, ok = det.pick(p.caption, allowed, cfg.language_min_prob)
            return replace(p, lang=lang) if ok else None

        step("language", by_language)
    else:
        skipped.append("language (disabled)")

    if cfg.max_posts_per_user is None:
        skipped.append("user (disabled)")
    elif not any(p.user for p in posts):
        skipped.append("user (the corpus has no user ids)")
    else:
        # Counted over the whole corpus: a spammer's posts all go, whatever other filters caught.
        per_user = Counter(p.user for p in posts if p.user)
        heavy = {u for u, n in per_user.items() if n > cfg.max_posts_per_user}
        if heavy:
            log.info("dropping the posts of %d users with over %d posts", len(heavy), cfg.max_posts_per_user)
        step("user", lambda p: None if p.user in heavy else p)

    if cfg.other_cities:
        matcher = CityMatcher(cfg.other_cities)
        step("city", lambda p: None if matcher.find(p.caption) else p)
    else:
        skipped.append("city (no other cities configured: no --topic file or --cities list)")

    # Both image filters from one read of each photo, over the worker processes.
    checks: dict[Path, tuple[str | None, bool]] = {}
    if cfg.drop_duplicates or cfg.check_images:
        paths = list(dict.fromkeys(p.image for p in current))
        bar = tqdm(total=len(paths), desc="filter: reading photos", unit="images", leave=False,
                   disable=progress is not None)
        for i, found in enumerate(forked_map(image_check, paths, workers or os.cpu_count() or 1,
                                             PARALLEL_MIN_IMAGES, chunksize=64), 1):
            checks[paths[i - 1]] = found
            bar.update(1)
            if progress is not None and (i % 500 == 0 or i == len(paths)):
                progress("filter:images", i, len(paths), "images")
        bar.close()

    if cfg.drop_duplicates:
        seen: set[str] = set()

        def first_copy(p: Post) -> Post | None:
            digest = checks[p.image][0]
            if digest is None:
                return p  # unreadable: the next filter counts it
            if digest in seen:
                return None
            seen.add(digest)
            return p

        step("duplicate", first_copy, unit="images")
    else:
        skipped.append("duplicate (disabled)")

    if cfg.check_images:
        step("unreadable", lambda p: p if checks[p.image][1] else None, unit="images")
    else:
        skipped.append("unreadable (disabled)")

    languages = Counter(p.lang or "unknown" for p in current)
    report: dict[str, Any] = {
        "total": len(posts),
        "kept": len(current),
        "dropped": {r: len(ids) for r, ids in dropped.items()},
        "languages": dict(languages.most_common()),
        "skipped_filters": skipped,
    }
    result = FilterResult(current, report, {r: ids for r, ids in dropped.items() if ids})
    log.info("filters: %s", result.summary().replace("\n", " | "))
    return result
