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

from train.corpus.ingest import FLICKR_SPLITS, FLICKR_TOKENS, POSTS_FILE

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


def english_captions(flickr8k: Path) -> dict[str, list[str]]:
    """Flickr8k's five English captions of each image."""
    out: dict[str, list[str]] = {}
    for line in (flickr8k / FLICKR_TOKENS).read_text(encoding="utf-8").splitlines():
        name, tab, text = line.partition("\t")
        if tab and text.strip():
            out.setdefault(name.split("#", 1)[0], []).append(text.strip())
    return out


def all_references(caption: str, english: Sequence[str], row: dict[str, str],
                   cols: dict[str, list[str]]) -> list[str]:
    """The post's own caption first, then every other caption of its image: the English ones, then each
    Spanish and Catalan translation (what the joint recipe trains on; the post still shows one)."""
    out = [caption]
    for text in [*english, *(row.get(c, "") for lang in ("es", "ca") for c in cols[lang])]:
        text = (text or "").strip()
        if text and text not in out:
            out.append(text)
    return out


def build_multilingual(
    src: Path,
    flickr8k: Path,
    out: Path,
    shares: Sequence[float] = (50, 30, 20),
    seed: int = 0,
    relative_paths: bool = False,
    parallel: bool = False,
    shuffle: bool = True,
    references: str = "one",
    all_images: bool = False,
) -> dict[str, Any]:
    """Write ``out/posts.jsonl``; return counts per language and split.

    ``shuffle`` (with ``parallel``): the parallel sentence's words are shuffled (:func:`parallel_sentence`);
    false keeps the ordered sentence (measured worse, kept for comparison). ``references="all"``: each
    post also carries every caption of its image in the three languages (:func:`all_references`) — the
    demo corpus, whose English benchmark then matches an English-only bundle's. ``all_images``: the
    Flickr8k images the TSV lacks become English posts with their own five captions.
    """
    if references not in ("one", "all"):
        raise ValueError(f"references must be 'one' or 'all', not {references!r}")
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
    english = english_captions(flickr8k) if references == "all" or all_images else {}
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
            refs = (all_references(caption, english.get(row["image"], []), row, cols) if references == "all"
                    else [caption])
            if parallel and split in ("train", "val"):
                refs.append(parallel_sentence(row, cols, shuffler))
                n_parallel += 1
            if len(refs) > 1:
                record["captions"] = refs
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            langs[lang] += 1
            by_split[str(split)] += 1
        covered = {row["image"] for row in rows}
        for name in sorted(english) if all_images else []:
            image = images / name
            if name in covered or not image.is_file():
                continue
            path = os.path.relpath(image.resolve(), out.resolve()) if relative_paths else str(image.resolve())
            caps = english[name]
            f.write(json.dumps({"id": name, "image": path, "caption": caps[0], "user": None, "taken_at": None,
                                "lang": "en", "split": splits.get(name), "column": "flickr8k",
                                "captions": caps}, ensure_ascii=False) + "\n")
            langs["en"] += 1
            by_split[str(splits.get(name))] += 1
    tmp.replace(out / POSTS_FILE)
    summary = {
        "posts": sum(langs.values()),
        "languages": dict(langs),
        "splits": dict(by_split),
        "missing_images": missing,
        "parallel_sentences": n_parallel,
        "shuffled": bool(parallel and shuffle),
        "shares": list(shares),
        "references": references,
        "seed": seed,
    }
    log.info("multilingual corpus: %s", summary)
    return summary
