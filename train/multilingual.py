"""A multilingual Flickr8k corpus of the original system's shape: each image one post, ONE caption in
one language (English, Spanish or Catalan), drawn with a seeded generator in given shares.

Input: ``flickr8k_multi30k_es_ca.tsv`` (read with quoting off: captions contain ``"``). English comes
from ``en_multi30k``, Spanish from one of the ``es_nllb_from_*`` columns, Catalan from one of the
``ca_apertium_from_es_*`` columns. Output: ``posts.jsonl`` with the standard Flickr8k split per row and
the true language in ``lang``.

With ``parallel``, each train/val post also carries, in ``captions``, one sentence holding the words of
the image's English, Spanish and Catalan captions, shuffled together: Word2Vec then sees translations in
one context window, which ties the three languages into one space (without it each language learns its
own unconnected corner, and Spanish or Catalan queries find images near chance). Shuffled, because in the
ordered ``en. es. ca.`` sentence Catalan words rarely share a window with English ones: on the full corpus
(``scripts/bench_multilingual.py``, 50/30/20) the centred ca and en captions of one image then had
cosine 0.03 and Catalan image-search R@10 was 0.52× English; shuffled, cosine 0.55 and 0.94×. Test posts
never carry it: their captions are the evaluation queries.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from train.ingest import FLICKR_SPLITS, POSTS_FILE

log = logging.getLogger(__name__)

LANGS = ("en", "es", "ca")
EN_COLUMN = "en_multi30k"
ES_PREFIX = "es_nllb_from_"
CA_PREFIX = "ca_apertium_from_es_"


def read_tsv(path: Path) -> list[dict[str, str]]:
    """All rows of the multilingual TSV (quoting off, so a ``"`` inside a caption stays a character)."""
    csv.field_size_limit(1 << 24)
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


def language_columns(header: Sequence[str]) -> dict[str, list[str]]:
    """The caption columns of each kept language."""
    cols = {
        "en": [c for c in header if c == EN_COLUMN],
        "es": sorted(c for c in header if c.startswith(ES_PREFIX)),
        "ca": sorted(c for c in header if c.startswith(CA_PREFIX)),
    }
    missing = [lang for lang, c in cols.items() if not c]
    if missing:
        raise ValueError(f"the TSV has no caption column for {', '.join(missing)}")
    return cols


def parallel_sentence(row: dict[str, str], cols: dict[str, list[str]],
                      rng: np.random.Generator | None = None) -> str:
    """The row's captions in every language, joined into one sentence (translations from English first).

    With ``rng``, the words of all three captions are shuffled together: Word2Vec's window (up to
    ``window`` words, sampled smaller) then puts each word beside words of every language, where the
    ordered ``en. es. ca.`` sentence mostly pairs en with es and es with ca, rarely ca with en (the
    pseudo-bilingual shuffling of Vulić & Moens 2015).
    """
    parts = []
    for lang in LANGS:
        column = next((c for c in cols[lang] if c.endswith("_en")), cols[lang][0])
        text = (row.get(column) or "").strip().rstrip(".")
        if text:
            parts.append(text + ".")
    if rng is None:
        return " ".join(parts)
    tokens = " ".join(p.rstrip(".") for p in parts).split()
    return " ".join(tokens[i] for i in rng.permutation(len(tokens)))


def build_multilingual(
    src: Path,
    flickr8k: Path,
    out: Path,
    shares: Sequence[float] = (50, 30, 20),
    seed: int = 0,
    relative_paths: bool = False,
    parallel: bool = False,
    shuffle: bool = True,
) -> dict[str, Any]:
    """Write ``out/posts.jsonl``; return counts per language and split.

    ``shuffle`` (with ``parallel``): the parallel sentence's words are shuffled (:func:`parallel_sentence`);
    false keeps the ordered sentence (measured worse, kept for comparison).
    """
    if len(shares) != len(LANGS) or any(s < 0 for s in shares) or sum(shares) <= 0:
        raise ValueError(f"--shares needs three non-negative numbers for {'/'.join(LANGS)}, got {shares}")
    p = np.asarray(shares, dtype=np.float64) / float(sum(shares))
    rows = read_tsv(src)
    cols = language_columns(list(rows[0].keys()) if rows else [])
    splits: dict[str, str] = {}
    for name_of_split, name in FLICKR_SPLITS.items():
        for line in (flickr8k / name).read_text(encoding="utf-8").split():
            splits[line] = name_of_split
    images = flickr8k / "images"
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # Its own stream, so shuffling never changes which language and column each post draws.
    shuffler = np.random.default_rng([seed, 1]) if shuffle else None
    langs: Counter[str] = Counter()
    by_split: Counter[str] = Counter()
    missing = n_parallel = 0
    tmp = out / (POSTS_FILE + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            # Draw for every row, even skipped ones, so a missing image never shifts the others' draws.
            lang = LANGS[int(rng.choice(len(LANGS), p=p))]
            column = cols[lang][int(rng.integers(len(cols[lang])))]
            image = images / row["image"]
            caption = (row.get(column) or "").strip()
            if not image.is_file():
                missing += 1
                continue
            path = os.path.relpath(image.resolve(), out.resolve()) if relative_paths else str(image.resolve())
            split: str | None = splits.get(row["image"])
            record: dict[str, Any] = {
                "id": row["image"],
                "image": path,
                "caption": caption,
                "user": None,
                "taken_at": None,
                "lang": lang,
                "split": split,
                "column": column,
            }
            if parallel and split in ("train", "val"):
                record["captions"] = [caption, parallel_sentence(row, cols, shuffler)]
                n_parallel += 1
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            langs[lang] += 1
            by_split[str(split)] += 1
    tmp.replace(out / POSTS_FILE)
    summary = {
        "posts": sum(langs.values()),
        "languages": dict(langs),
        "splits": dict(by_split),
        "missing_images": missing,
        "parallel_sentences": n_parallel,
        "shuffled": bool(parallel and shuffle),
        "shares": list(shares),
        "seed": seed,
    }
    log.info("multilingual corpus: %s", summary)
    return summary
