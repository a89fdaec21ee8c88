"""The answers people see, measured on a bundle through the engine's own answering code.

    python scripts/bench_answers.py BUNDLE --flickr8k ../shared/data/flickr8k [--json OUT.json]

On the 1,000 standard Flickr8k test photos and the corpus' most frequent content words:

- photo → hashtags (``engine.service.hashtags`` on each test photo's bytes, as a user sends it): P@5
  and "at least one right". A word counts when it, or it with a trailing "s"/"es" added or removed,
  appears in one of the photo's five reference captions (lowercased, split on non-letters); function
  words never count. The hashtags are asked in English (``--lang``), as the bot asks them for an English
  user: on a multilingual bundle that keeps them to words of its English captions. Anchors from the same
  bundle: the five most frequent content words for every photo, and kNN caption transfer (the caption
  words of the 20 nearest training photos by cosine on the bundle's image vectors, each weighted by
  similarity × √idf).
- word → images, P@10 over the 100 most frequent content words: over the whole corpus as the engine
  answers ``/v1/images?q=WORD`` (an image counts when one of its own captions contains the word), and
  over the 1,000 test images alone ranked from their pixels only (the text query against the test
  images' vectors; captions unused). Anchors: the base rate (a random ranking) and kNN caption transfer.
- caption → image and image → caption R@1/5/10 and median rank on all 1,000 test images, whatever the
  bundle's filters kept (a test image missing from the bundle is encoded by the bundle's encoder).
- misspelt words: one deterministic edit of each of the 100 words (4 letters or more), and whether the
  engine's word lookup finds the word again.
- with ``--tsv flickr8k_multi30k_es_ca.tsv``: hashtags asked in Spanish and in Catalan (as the bot asks
  for a user of that language), scored like the English ones against the photo's captions in that
  language (every Spanish or Catalan column of the TSV), on the test photos the TSV covers.
- with ``--multilingual WORDS.tsv --tsv flickr8k_multi30k_es_ca.tsv``: the same word queries in English,
  Spanish and Catalan (``scripts/data/words_en_es_ca.tsv``: 50 frequent English content words and their
  equivalents), P@10 over the whole corpus and over the test images the TSV covers (pixels only); an
  image counts when its English reference captions contain the English word, whatever language asked.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.model import Model, load_model  # noqa: E402
from engine.service import ImageJob, ImageLimits, encode_image, hashtags, images  # noqa: E402
from space.bundle import manifest_crops  # noqa: E402
from space.errors import SpaceError  # noqa: E402
from space.images import network_views, open_image  # noqa: E402
from space.query import parse_query  # noqa: E402
from space.textspace import unit  # noqa: E402
from space.tokenize import stop_words  # noqa: E402
from train.corpus.multilingual import language_columns, read_tsv  # noqa: E402
from train.evaluate import retrieval_metrics  # noqa: E402

log = logging.getLogger("bench_answers")

LIMITS = ImageLimits(max_bytes=20 * 1024 * 1024, max_pixels=50_000_000)
KNN = 20
_LETTERS = re.compile(r"[^\W\d_]+")


@dataclass(frozen=True)
class Reference:
    """The corpus as the benchmark reads it: each image's reference captions and its split."""

    captions: dict[str, list[str]]
    split: dict[str, str]
    images: Path

    def words_of(self, name: str) -> set[str]:
        """Every word of the image's reference captions (lowercased, split on non-letters)."""
        return {w for c in self.captions.get(name, []) for w in _LETTERS.findall(c.lower())}

    def names(self, split: str) -> list[str]:
        """The images of one split, sorted."""
        return sorted(n for n, s in self.split.items() if s == split and n in self.captions)


def read_flickr8k(root: Path) -> Reference:
    """Flickr8k's token file and split lists."""
    captions: dict[str, list[str]] = {}
    for line in (root / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, tab, text = line.partition("\t")
        if tab:
            captions.setdefault(name.split("#", 1)[0], []).append(text.strip())
    split: dict[str, str] = {}
    for part, file in (("train", "Flickr_8k.trainImages.txt"), ("val", "Flickr_8k.devImages.txt"),
                       ("test", "Flickr_8k.testImages.txt")):
        for name in (root / file).read_text(encoding="utf-8").split():
            split[name] = part
    return Reference(captions, split, root / "images")


def as_json(body: bytes | dict[str, Any]) -> dict[str, Any]:
    """An engine answer as a dict (the engine hands pre-encoded bodies to HTTP)."""
    return body if isinstance(body, dict) else json.loads(body)


def counts_as(word: str, caption_words: set[str], function_words: frozenset[str]) -> bool:
    """Whether a predicted word is right: in the captions as is, or with a trailing s/es added or removed."""
    if word in function_words:
        return False
    forms = {word, word + "s", word + "es"}
    if word.endswith("es"):
        forms.add(word[:-2])
    if word.endswith("s"):
        forms.add(word[:-1])
    return bool(forms & caption_words)


def precision(predicted: list[list[str]], truths: list[set[str]], function_words: frozenset[str],
              k: int) -> dict[str, float]:
    """P@k and the share of rows with at least one right word, in percent."""
    right = [[counts_as(w, t, function_words) for w in p[:k]] for p, t in zip(predicted, truths, strict=True)]
    return {
        f"p{k}": round(100 * float(np.mean([sum(r) / k for r in right])), 1),
        "one_right": round(100 * float(np.mean([any(r) for r in right])), 1),
    }


def frequent_content_words(ref: Reference, model: Model, n: int, function_words: frozenset[str]) -> list[str]:
    """The ``n`` content words in most captions of the corpus (function words excluded)."""
    df: Counter[str] = Counter()
    for caps in ref.captions.values():
        for c in caps:
            df.update({w for w in _LETTERS.findall(c.lower()) if len(w) > 1} - function_words)
    return [w for w, _ in df.most_common(n)]


def test_vectors(model: Model, ref: Reference, names: list[str]) -> tuple[np.ndarray, np.ndarray, int]:
    """(bundle-protocol vectors, serving vectors (one view, as a sent photo), n encoded anew)."""
    row_of = {Path(str(it.get("path", ""))).name: i for i, it in enumerate(model.items)}
    crops = manifest_crops(model.manifest)
    framing = model.framing
    raw_rows = np.load(model.path / "images.npy", mmap_mode="r")
    stored, served, fresh = [], [], 0
    for name in names:
        path = ref.images / name
        served.append(encode_image(model, path.read_bytes(), LIMITS))
        if name in row_of:
            stored.append(np.asarray(raw_rows[row_of[name]], np.float32))
        else:
            views = network_views(open_image(path), crops, framing)
            stored.append(model.encode(views).mean(axis=0))
            fresh += 1
    return np.stack(stored), np.stack(served), fresh


def knn_transfer(model: Model, ref: Reference, queries: np.ndarray, vocab: list[str]) -> np.ndarray:
    """Scores (queries × vocab) of the caption words of the 20 nearest training photos (sim × √idf)."""
    train_rows = [i for i, it in enumerate(model.items) if it.get("split") == "train"]
    raw = np.load(model.path / "images.npy")
    train = unit(raw[train_rows])
    sims = unit(queries) @ train.T
    col = {w: j for j, w in enumerate(vocab)}
    labels = np.zeros((len(train_rows), len(vocab)), np.float32)
    for r, i in enumerate(train_rows):
        name = Path(str(model.items[i].get("path", ""))).name
        for w in ref.words_of(name):
            if w in col:
                labels[r, col[w]] = 1.0
    idf = np.array([model.space.idf[model.space.index[w]] for w in vocab], np.float32)
    top = np.argsort(-sims, axis=1)[:, :KNN]
    weights = np.take_along_axis(sims, top, axis=1)
    return np.einsum("qk,qkv->qv", weights, labels[top]) * np.sqrt(np.maximum(idf, 0))[None]


def bench_hashtags(model: Model, ref: Reference, served: np.ndarray, names: list[str], k: int,
                   function_words: frozenset[str], lang: str | None) -> dict[str, Any]:
    """P@k of the engine's hashtags (in ``lang``'s words, when the bundle knows it) and of the anchors."""
    truths = [ref.words_of(n) for n in names]
    engine_words = [[h["word"] for h in as_json(hashtags(model, v, k, lang))["hashtags"]] for v in served]
    vocab = [w for w in model.space.words if w not in function_words]
    train_df: Counter[str] = Counter()
    for n in ref.names("train"):
        train_df.update(ref.words_of(n) & set(vocab))
    constant = [w for w, _ in train_df.most_common(k)]
    knn = knn_transfer(model, ref, served, vocab)
    knn_words = [[vocab[j] for j in np.argsort(-row)[:k]] for row in knn]
    examples = {n: w for n, w in list(zip(names, engine_words, strict=True))[:5]}
    return {
        "bundle": precision(engine_words, truths, function_words, k),
        "constant": precision([constant] * len(names), truths, function_words, k),
        "knn_transfer": precision(knn_words, truths, function_words, k),
        "constant_words": constant,
        "examples": examples,
    }


def pixel_p10(model: Model, query: str, test_vecs: np.ndarray, hit: Callable[[int], bool]) -> float:
    """P@10 of the test images ranked for ``query`` from their vectors alone (``hit(j)``: test image ``j``
    is right); 0 when no word of the query is known."""
    try:
        vec, _ = model.text_query(parse_query(query))
    except SpaceError:
        return 0.0
    top = np.argsort(-(test_vecs @ vec))[:10]
    return float(np.mean([hit(int(j)) for j in top]))


def bench_words(model: Model, ref: Reference, words: list[str], stored: np.ndarray, served: np.ndarray,
                test_names: list[str], function_words: frozenset[str]) -> dict[str, Any]:
    """P@10 of word queries: whole corpus through the engine, test images from pixels only, anchors."""
    name_of = [Path(str(it.get("path", ""))).name for it in model.items]
    by_id = {pid: i for i, pid in enumerate(model.ids)}
    corpus_hits, answered = [], 0
    for w in words:
        body = as_json(images(model, [ImageJob(parse_query(w), k=10)])[0])
        rows = [by_id[h["id"]] for h in body["images"] if h["id"] in by_id]
        answered += bool(rows)
        corpus_hits.append(float(np.mean([counts_as(w, ref.words_of(name_of[r]), function_words)
                                          for r in rows])) if rows else 0.0)
    truths = [ref.words_of(n) for n in test_names]
    has = np.array([[counts_as(w, t, function_words) for t in truths] for w in words], np.float32)
    test_vecs = unit(stored if model.centering is None else model.centering.images(stored))
    pixel_p = [pixel_p10(model, w, test_vecs, lambda j, i=i: bool(has[i, j])) for i, w in enumerate(words)]
    vocab = [w for w in words if w in model.space.index]
    knn = knn_transfer(model, ref, served, vocab) if vocab else np.zeros((len(test_names), 0))
    knn_p = []
    for i, w in enumerate(words):
        if w in model.space.index:
            top = np.argsort(-knn[:, vocab.index(w)])[:10]
            knn_p.append(float(has[i, top].mean()))
        else:
            knn_p.append(0.0)
    return {
        "n_words": len(words),
        "answered": answered,
        "corpus_p10": round(100 * float(np.mean(corpus_hits)), 1),
        "test_pixels_p10": round(100 * float(np.mean(pixel_p)), 1),
        "test_base_rate": round(100 * float(has.mean()), 1),
        "test_knn_transfer_p10": round(100 * float(np.mean(knn_p)), 1),
        "unanswered": [w for w, p in zip(words, corpus_hits, strict=True) if not p],
    }


def read_word_table(path: Path) -> list[dict[str, str]]:
    """The rows of a tab-separated word table (``#`` lines are comments, the first other line the header)."""
    lines = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip() and not x.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, x.split("\t"), strict=True)) for x in lines[1:]]


def bench_languages(model: Model, ref: Reference, table: list[dict[str, str]], tsv: Path,
                    names: list[str], stored: np.ndarray, function_words: frozenset[str]) -> dict[str, Any]:
    """P@10 of the same word queries in each language of ``table``: whole corpus and covered test images."""
    covered_names = {line.split("\t", 1)[0] for line in tsv.read_text(encoding="utf-8").splitlines()[1:]}
    covered = [i for i, n in enumerate(names) if n in covered_names]
    test_vecs = unit(stored[covered] if model.centering is None else model.centering.images(stored[covered]))
    truths = [ref.words_of(names[i]) for i in covered]
    name_of = [Path(str(it.get("path", ""))).name for it in model.items]
    by_id = {pid: i for i, pid in enumerate(model.ids)}
    out: dict[str, Any] = {"n_words": len(table), "n_covered_test": len(covered)}
    for lang in ["en", *[c for c in table[0] if c != "en"]]:
        corpus_p, pixel_p, answered = [], [], 0
        for row in table:
            word, truth = row[lang], row["en"]
            body = as_json(images(model, [ImageJob(parse_query(word), k=10)])[0])
            rows = [by_id[h["id"]] for h in body["images"] if h["id"] in by_id]
            answered += bool(rows)
            corpus_p.append(float(np.mean([counts_as(truth, ref.words_of(name_of[r]), function_words)
                                           for r in rows])) if rows else 0.0)
            pixel_p.append(pixel_p10(model, word, test_vecs,
                                     lambda j, t=truth: counts_as(t, truths[j], function_words)))
        out[lang] = {"answered": answered, "corpus_p10": round(100 * float(np.mean(corpus_p)), 1),
                     "test_pixels_p10": round(100 * float(np.mean(pixel_p)), 1)}
    for lang in out:
        if isinstance(out[lang], dict) and lang != "en":
            en = out["en"]
            out[lang]["ratio_to_en"] = {k: round(out[lang][k] / max(en[k], 1e-9), 2)
                                        for k in ("corpus_p10", "test_pixels_p10")}
    return out


def language_references(ref: Reference, tsv: Path) -> dict[str, Reference]:
    """Each image's Spanish and Catalan captions (every column of the language in the TSV) as references."""
    rows = read_tsv(tsv)
    cols = language_columns(list(rows[0]) if rows else [])
    out: dict[str, Reference] = {}
    for lang in ("es", "ca"):
        caps = {r["image"]: [r[c].strip() for c in cols[lang] if (r.get(c) or "").strip()] for r in rows}
        out[lang] = Reference({n: c for n, c in caps.items() if c}, ref.split, ref.images)
    return out


def bench_language_hashtags(model: Model, ref: Reference, tsv: Path, served: np.ndarray, names: list[str],
                            k: int) -> dict[str, Any]:
    """Hashtags asked in Spanish and in Catalan, scored against the photo's captions in that language (the
    test photos the TSV covers), with the same anchors computed from that language's captions."""
    out: dict[str, Any] = {}
    for lang, lang_ref in language_references(ref, tsv).items():
        idx = [i for i, n in enumerate(names) if n in lang_ref.captions]
        photos = [names[i] for i in idx]
        scored = bench_hashtags(model, lang_ref, served[idx], photos, k, stop_words(lang), lang)
        out[lang] = {"n_test": len(idx), **scored}
    return out


def bench_retrieval(model: Model, ref: Reference, stored: np.ndarray, names: list[str]) -> dict[str, Any]:
    """R@1/5/10 and median rank both ways on the test images, captions embedded as queries."""
    vecs, owner = [], []
    for i, n in enumerate(names):
        for c in ref.captions[n]:
            try:
                vec, _ = model.text_query(parse_query(c))
            except SpaceError:
                vec = np.zeros(stored.shape[1], np.float32)
            vecs.append(vec)
            owner.append(i)
    image_vecs = stored if model.centering is None else model.centering.images(stored)
    return retrieval_metrics(image_vecs, np.stack(vecs), owner)


def one_edit(word: str, i: int) -> str:
    """A deterministic misspelling: swap, drop, double or replace one inner letter, by ``i``."""
    j = 1 + i % (len(word) - 2)
    kind = i % 4
    if kind == 0:
        return word[:j] + word[j + 1] + word[j] + word[j + 2:]
    if kind == 1:
        return word[:j] + word[j + 1:]
    if kind == 2:
        return word[:j] + word[j] + word[j:]
    return word[:j] + ("e" if word[j] != "e" else "a") + word[j + 1:]


def bench_typos(model: Model, words: list[str]) -> dict[str, Any]:
    """How often a one-edit misspelling of a frequent word is matched back to it."""
    tried = [(w, one_edit(w, i)) for i, w in enumerate(words) if len(w) >= 4 and w in model.space.index]
    found = [model.space.lookup(typo) == model.space.index[w] for w, typo in tried]
    return {"n": len(tried), "recovered": round(100 * float(np.mean(found)), 1) if tried else 0.0,
            "missed": [typo for (_, typo), ok in zip(tried, found, strict=True) if not ok][:20]}


def markdown(result: dict[str, Any]) -> str:
    """The benchmark's tables."""
    h, w, r = result["hashtags"], result["words"], result["retrieval"]
    s, a = r["image_search"], r["annotation"]
    return "\n".join([
        f"Bundle {result['version']} ({result['n_images']} images); {result['n_test']} test photos "
        f"({result['encoded_anew']} not in the bundle, encoded by its encoder).",
        "",
        "| photo → hashtags (k = 5) | P@5 | at least one right |",
        "|---|---|---|",
        f"| **this bundle** | **{h['bundle']['p5']}** | **{h['bundle']['one_right']}** |",
        f"| kNN caption transfer (20 nearest training photos) | {h['knn_transfer']['p5']} | "
        f"{h['knn_transfer']['one_right']} |",
        f"| constant: {' '.join(h['constant_words'])} | {h['constant']['p5']} | "
        f"{h['constant']['one_right']} |",
        "",
        f"| word → images, {w['n_words']} most frequent content words | P@10 |",
        "|---|---|",
        f"| **whole corpus, as the engine answers** ({w['answered']} of {w['n_words']} answer) | "
        f"**{w['corpus_p10']}** |",
        f"| **test images, pixels only** | **{w['test_pixels_p10']}** |",
        f"| test images, kNN caption transfer | {w['test_knn_transfer_p10']} |",
        f"| test images, random ranking (base rate) | {w['test_base_rate']} |",
        "",
        "| 1K test | R@1 | R@5 | R@10 | med r |",
        "|---|---|---|---|---|",
        f"| caption → image | {s['r1']} | {s['r5']} | {s['r10']} | {s['medr']:.0f} |",
        f"| image → caption | {a['r1']} | {a['r5']} | {a['r10']} | {a['medr']:.0f} |",
        "",
        f"Misspelt words (one edit each, {result['typos']['n']} words): {result['typos']['recovered']} % "
        "matched back.",
        *_language_rows(result.get("languages")),
        *_language_hashtag_rows(result.get("hashtags_by_language")),
    ])


def _language_rows(langs: dict[str, Any] | None) -> list[str]:
    if not langs:
        return []
    rows = ["", f"| {langs['n_words']} word queries per language | answered | P@10 whole corpus | "
            f"P@10 test images, pixels only ({langs['n_covered_test']} covered) | "
            "× English (corpus / pixels) |", "|---|---|---|---|---|"]
    for lang, r in langs.items():
        if isinstance(r, dict):
            ratio = r.get("ratio_to_en")
            rel = f"{ratio['corpus_p10']} / {ratio['test_pixels_p10']}" if ratio else "1 / 1"
            rows.append(f"| {lang} | {r['answered']} | {r['corpus_p10']} | {r['test_pixels_p10']} | {rel} |")
    return rows


def _language_hashtag_rows(by_lang: dict[str, Any] | None) -> list[str]:
    if not by_lang:
        return []
    rows = ["", "| photo → hashtags asked in the language, its TSV captions as references | test photos | "
            "P@5 / one right | kNN transfer | constant |", "|---|---|---|---|---|"]
    for lang, h in by_lang.items():
        rows.append(f"| {lang} (constant: {' '.join(h['constant_words'])}) | {h['n_test']} | "
                    f"**{h['bundle']['p5']}** / {h['bundle']['one_right']} | "
                    f"{h['knn_transfer']['p5']} / {h['knn_transfer']['one_right']} | "
                    f"{h['constant']['p5']} / {h['constant']['one_right']} |")
    return rows


def main() -> int:
    """Run every part of the benchmark on one bundle; print tables, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", type=Path, help="a bundle directory (models/<version>)")
    p.add_argument("--flickr8k", type=Path, required=True, help="the Flickr8k folder (captions, splits)")
    p.add_argument("--words", type=int, default=100, help="how many frequent content words to query")
    p.add_argument("--k", type=int, default=5, help="hashtags per photo")
    p.add_argument("--lang", default="en",
                   help="the language the hashtags are asked in, as the bot does for its user (default en: "
                   "the references are English); 'any' asks with no language")
    p.add_argument("--limit", type=int, default=None, help="only the first N test photos (smoke runs)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--multilingual", type=Path, default=None,
                   help="a word table (en, es, ca columns) to query in every language, e.g. "
                   "scripts/data/words_en_es_ca.tsv (needs --tsv)")
    p.add_argument("--tsv", type=Path, default=None,
                   help="flickr8k_multi30k_es_ca.tsv (the test images it covers are scored)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    started = time.monotonic()
    model = load_model(args.bundle.resolve(), ort_threads=2)
    ref = read_flickr8k(args.flickr8k)
    function_words = stop_words("en")
    names = ref.names("test")[: args.limit]
    stored, served, fresh = test_vectors(model, ref, names)
    words = frequent_content_words(ref, model, args.words, function_words)
    result = {
        "version": model.version,
        "n_images": len(model.items),
        "n_test": len(names),
        "encoded_anew": fresh,
        "hashtags": bench_hashtags(model, ref, served, names, args.k, function_words,
                                   None if args.lang == "any" else args.lang),
        "words": bench_words(model, ref, words, stored, served, names, function_words),
        "retrieval": bench_retrieval(model, ref, stored, names),
        "typos": bench_typos(model, words),
        "languages": (bench_languages(model, ref, read_word_table(args.multilingual), args.tsv, names, stored,
                                      function_words) if args.multilingual and args.tsv else None),
        "hashtags_by_language": (bench_language_hashtags(model, ref, args.tsv, served, names, args.k)
                                 if args.tsv else None),
        "seconds": round(time.monotonic() - started, 1),
    }
    print(markdown(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False), encoding="utf-8")
    model.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
