"""Cheap full-size multilingual benchmark: does one space serve English, Spanish and Catalan queries?

    nice -n 5 python scripts/bench_multilingual.py --flickr8k ../shared/data/flickr8k \
        --tsv ../shared/data/flickr8k-multilingual/flickr8k_multi30k_es_ca.tsv \
        --pooled var/bench --work var/bench/ml \
        --variants 50,30,20 50,30,20:parallel 50,30,20:shuffled 70,20,10:shuffled
    python scripts/bench_multilingual.py --tsv ...tsv --bundle MODELS/VERSION   # a trained bundle

Per variant (``SHARES[:parallel]``): build the multilingual corpus at full size
(``train.corpus.multilingual``), run the trainer's own ingest, filter, split and text stages on it (Word2Vec
+ TF-IDF on the train + dev posts), map images with a closed-form ridge (as
``train.evaluate.ridge_baseline``) from CACHED frozen GoogLeNet pooled 1,024-d features (one centre view;
``scripts/bench_retrieval.py --linear-contrastive`` writes them) to the train posts' caption vectors, then
run image search over the 929 test images the TSV covers with the en, es and ca caption of each image as
queries, centred as a bundle is served (``train.evaluate.multilingual_search``). No CNN training: minutes per
variant. (``train all`` fits its text space on every kept post, test captions included: for a bundle, each
test post's own caption, one of the queries in its language, is training text.)

Beside the standard one-column-per-language queries (``MULTILINGUAL_COLUMNS``), every es/ca column
(4 each) is scored, and a paired bootstrap over test images gives a 90 % interval of each ratio. The
diagnostics say why a language lags: train posts per language after the filters, vocabulary words per
language, query tokens unknown to the space or known with zero idf, and queries with no known word.

``--pooled W`` is the ``--work`` folder of a full (not ``--quick``) run of
``scripts/bench_retrieval.py ... --work W --configs "" --skip-baseline --linear-contrastive``. That run
names the pooled features after its trunk caches, ``pooled-trunk-<hash>-v0.npy`` (the hash covers the
image list, the views and the weights), one file for the train images and one for the test images; this
script tells them apart by their row counts. The rows follow bench_retrieval's order: train rows = the
Flickr8k train images in the order of ``W/text/caption_ids.json`` (its first 6,000 ids), test rows = the
test images sorted by name.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import space.tokenize as tokenizer
from space.centering import Centering
from space.textspace import TextSpace, unit
from space.tokenize import CUSTOM_STOP_WORDS, tokenize, words
from train.config import IngestConfig, PipelineConfig
from train.corpus.ingest import FLICKR_SPLITS
from train.corpus.multilingual import CA_PREFIX, ES_PREFIX, LANGS, build_multilingual
from train.corpus.posts import Post
from train.evaluate import (
    MULTILINGUAL_COLUMNS,
    embed_captions,
    evaluate_multilingual,
    multilingual_search,
    read_multilingual_rows,
)
from train.pipeline import Pipeline
from train.text.word2vec import TextResult, build_text_space

log = logging.getLogger("bench_multilingual")


@dataclass(frozen=True)
class Variant:
    """One corpus recipe: language shares, whether train/dev posts carry a parallel sentence, shuffled."""

    shares: tuple[float, float, float]
    parallel: bool
    shuffle: bool = False

    @property
    def name(self) -> str:
        """A folder-safe name, e.g. ``50-30-20-par``."""
        flag = "-shuf" if self.shuffle else "-par" if self.parallel else ""
        return "-".join(f"{s:g}" for s in self.shares) + flag

    @classmethod
    def parse(cls, text: str) -> Variant:
        """``50,30,20``, ``50,30,20:parallel`` or ``50,30,20:shuffled`` (a shuffled parallel sentence)."""
        shares, _, flag = text.partition(":")
        values = tuple(float(x) for x in shares.split(","))
        if len(values) != 3 or flag not in ("", "parallel", "shuffled"):
            raise ValueError(f"a variant is SHARES[:parallel|:shuffled] with three shares, got {text!r}")
        return cls((values[0], values[1], values[2]), flag != "", flag == "shuffled")


def glasgow_stop_words(languages: tuple[str, ...] = LANGS) -> frozenset[str]:
    """The tokenizer's stop set with scikit-learn's 318-word English list in place of stop-words' 1,333.

    The larger list drops content words of every caption ("man", "men", "young", "little", "big", "old",
    "small") and, through the union, Catalan "home" (man) and "cases" (houses); the Glasgow list keeps them.
    """
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS
    from stop_words import get_stop_words

    out: set[str] = set(CUSTOM_STOP_WORDS) | set(ENGLISH_STOP_WORDS)
    for code in languages:
        if code != "en":
            for w in get_stop_words({"es": "spanish", "ca": "catalan"}[code]):
                out.update(words(w))
    return frozenset(out)


def ridge_map(train_f: np.ndarray, train_t: np.ndarray, test_f: np.ndarray,
              alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Test predictions of a standardised closed-form ridge map, and its mean training output."""
    mu, sd = train_f.mean(0), train_f.std(0) + 1e-6
    x = (train_f - mu) / sd
    ym = train_t.mean(0)
    w = np.linalg.solve(x.T @ x + alpha * len(x) * np.eye(x.shape[1]), x.T @ (train_t - ym))
    return (((test_f - mu) / sd) @ w + ym).astype(np.float32), ym.astype(np.float32)


def pooled_features(folder: Path, rows: int, split: str) -> np.ndarray:
    """bench_retrieval's one-view pooled features of the ``rows`` ``split`` images, found in ``folder``.

    bench_retrieval writes them as ``pooled-<trunk cache name>-v0.npy``, a name built from a hash of the
    image paths as it was given them, so the file is found by its row count rather than by recomputing
    the hash.
    """
    found = [p for p in sorted(folder.glob("pooled-*-v0.npy"))
             if np.load(p, mmap_mode="r").shape[0] == rows]
    hint = (f"run `python scripts/bench_retrieval.py --flickr8k FLICKR8K --weights WEIGHTS --work {folder} "
            "--configs '' --skip-baseline --linear-contrastive` first (a full run, not --quick)")
    if not found:
        raise SystemExit(f"no pooled features of the {rows} {split} images (pooled-*-v0.npy with "
                         f"{rows} rows) in {folder}: {hint}")
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise SystemExit(f"several pooled feature files have {rows} rows ({split} images) in {folder}: "
                         f"{names}; give --pooled the work folder of one bench_retrieval run (one weights "
                         "folder)")
    log.info("pooled %s features: %s", split, found[0].name)
    return np.load(found[0])


def split_names(flickr8k: Path) -> dict[str, str]:
    """Flickr8k image name → standard split."""
    return {n: split for split, f in FLICKR_SPLITS.items()
            for n in (flickr8k / f).read_text(encoding="utf-8").split()}


def columns_of(header: Sequence[str]) -> dict[str, list[str]]:
    """Every caption column per language (en: one; es, ca: four)."""
    return {"en": [MULTILINGUAL_COLUMNS["en"]],
            "es": sorted(c for c in header if c.startswith(ES_PREFIX)),
            "ca": sorted(c for c in header if c.startswith(CA_PREFIX))}


def query_diagnostics(space: TextSpace, captions: Sequence[str]) -> dict[str, float]:
    """Why queries in one language miss: tokens unknown, known with zero idf, stop words removed."""
    stop = tokenizer.stop_words()
    n_words = n_stop = n_tok = n_unknown = n_zero_idf = n_empty = 0
    for c in captions:
        all_words = words(c)
        toks = tokenize(c)
        n_words += len(all_words)
        n_stop += sum(w in stop for w in all_words)
        n_tok += len(toks)
        known = [t for t in toks if t in space.index]
        n_unknown += len(toks) - len(known)
        n_zero_idf += sum(float(space.idf[space.index[t]]) <= 0 for t in known)
        n_empty += not known
    n = max(1, len(captions))
    return {"content_tokens_per_query": round(n_tok / n, 2),
            "stop_word_share_pct": round(100 * n_stop / max(1, n_words), 1),
            "unknown_token_pct": round(100 * n_unknown / max(1, n_tok), 2),
            "zero_idf_token_pct": round(100 * n_zero_idf / max(1, n_tok), 2),
            "no_known_word_queries": n_empty}


def translation_cosine(space: TextSpace, rows: Sequence[dict[str, str]],
                       centre: np.ndarray) -> dict[str, float]:
    """Mean cosine of each centred es/ca query with the centred en query of the same image.

    One space means translations land close: far above ``random`` (en queries of different images).
    """
    vecs = {}
    for lang, col in MULTILINGUAL_COLUMNS.items():
        q, _ = embed_captions(space, [r[col] for r in rows])
        vecs[lang] = unit(Centering(centre, centre).texts(q))
    out = {lang: round(float((vecs[lang] * vecs["en"]).sum(1).mean()), 3) for lang in ("es", "ca")}
    out["es_ca"] = round(float((vecs["es"] * vecs["ca"]).sum(1).mean()), 3)
    out["random"] = round(float((vecs["en"] * np.roll(vecs["en"], 1, axis=0)).sum(1).mean()), 3)
    return out


def bootstrap_ratio(hits: dict[str, np.ndarray], n: int = 2000, seed: int = 0) -> dict[str, list[float]]:
    """90 % paired-bootstrap intervals (over test images) of each language's R@10 over English's."""
    rng = np.random.default_rng(seed)
    size = len(hits["en"])
    out: dict[str, list[float]] = {}
    idx = rng.integers(size, size=(n, size))
    en = hits["en"][idx].mean(1)
    for lang in hits:
        if lang == "en":
            continue
        r = hits[lang][idx].mean(1) / np.maximum(en, 1e-9)
        out[lang] = [round(float(np.quantile(r, 0.05)), 3), round(float(np.quantile(r, 0.95)), 3)]
    return out


def hits_at_10(space: TextSpace, image_vecs: np.ndarray, owner: np.ndarray, captions: Sequence[str],
               centering: Centering) -> np.ndarray:
    """Per query, whether its image ranks in the top 10 (centred, ties against the model)."""
    q, _ = embed_captions(space, captions)
    sims = unit(centering.texts(q)) @ unit(centering.images(image_vecs)).T
    correct = sims[np.arange(len(owner)), owner]
    return ((sims >= correct[:, None]).sum(axis=1) <= 10).astype(np.float64)


def run_variant(v: Variant, args: argparse.Namespace, pooled_train: np.ndarray, train_row: dict[str, int],
                pooled_test: np.ndarray, test_row: dict[str, int], tsv_rows: list[dict[str, str]],
                splits: dict[str, str]) -> dict[str, Any]:
    """Corpus → trainer text stages → ridge → multilingual image search and diagnostics for ``v``."""
    t0 = time.monotonic()
    name = v.name + ("-glasgow" if args.stop == "glasgow-en" else "")
    name += f"-seed{args.seed}" if args.seed else ""
    corpus = args.work / name / "corpus"
    built = build_multilingual(args.tsv, args.flickr8k, corpus, v.shares, args.seed, parallel=v.parallel,
                               shuffle=v.shuffle)
    cfg = PipelineConfig(ingest=IngestConfig(corpus / "posts.jsonl", "jsonl"), models=args.work / "models",
                         work=args.work / name / "pipe")
    pipe = Pipeline(cfg)
    st, posts, _ = pipe.ingest()
    st, kept, report = pipe.filter(st, posts)
    st, kept, _ = pipe.split(st, kept)
    # The trainer's text function on the train + dev posts only (test captions are the queries), cached
    # beside the pipeline's stages under its own folder.
    fit = [p for p in kept if p.split in ("train", "val")]
    text_dir = args.work / name / "text-train-dev"
    if (text_dir / "caption_ids.json").is_file():
        text = TextResult.load(text_dir, fit)
    else:
        text = build_text_space(fit, cfg.text)
        text.save(text_dir)
    t_text = time.monotonic() - t0

    def true_lang(p: Post) -> str:
        return str(p.source.get("lang_given") or p.lang)

    train_posts = [(i, p) for i, p in enumerate(text.posts) if p.split == "train" and p.id in train_row]
    x = pooled_train[[train_row[p.id] for _, p in train_posts]]
    y = text.vectors[[i for i, _ in train_posts]]
    pred, ym = ridge_map(x, y, pooled_test, args.alpha)
    centring = Centering(ym, ym)  # ridge with an intercept: mean training output = mean training target

    m = multilingual_search(text.space, pred, test_row, tsv_rows, MULTILINGUAL_COLUMNS, centring)
    owner = np.array([test_row[r["image"]] for r in tsv_rows])
    cols = columns_of(list(tsv_rows[0].keys()))
    every: dict[str, dict[str, float]] = {}
    for lang, names in cols.items():
        per = [multilingual_search(text.space, pred, test_row, tsv_rows, {lang: c}, centring)[lang]["r10"]
               for c in names]
        every[lang] = {"r10_mean": round(float(np.mean(per)), 2), "r10_per_column": per}  # type: ignore[dict-item]
    for lang in ("es", "ca"):
        every[lang]["r10_vs_en"] = round(every[lang]["r10_mean"] / every["en"]["r10_mean"], 3)
    hits = {lang: hits_at_10(text.space, pred, owner, [r[c] for r in tsv_rows], centring)
            for lang, c in MULTILINGUAL_COLUMNS.items()}

    # Diagnostics: what each language's share of the text side looks like.
    lang_posts = Counter(true_lang(p) for p in posts)
    lang_kept = Counter(true_lang(p) for p in kept)
    lang_train = Counter(true_lang(p) for _, p in train_posts)
    detected = Counter(f"{true_lang(p)}→{p.lang}" for p in kept if true_lang(p) != p.lang)
    fit_rows = [r for r in read_multilingual_rows(args.tsv) if splits.get(r["image"]) in ("train", "val")]
    vocab: dict[str, dict[str, int]] = {}
    for lang in LANGS:
        types = {t for r in fit_rows for c in cols[lang] for t in tokenize(r[c])}
        known = [t for t in types if t in text.space.index]
        vocab[lang] = {"types_in_tsv_train_dev": len(types), "in_space": len(known),
                       "zero_idf": sum(float(text.space.idf[text.space.index[t]]) <= 0 for t in known)}
    diag = {lang: query_diagnostics(text.space, [r[c] for r in tsv_rows])
            for lang, c in MULTILINGUAL_COLUMNS.items()}
    return {
        "variant": name, "stop": args.stop, "shares": list(v.shares), "parallel": v.parallel,
        "shuffled": v.shuffle,
        "search": m, "all_columns": every, "ratio_90pct_bootstrap": bootstrap_ratio(hits),
        "posts_per_lang": dict(lang_posts), "kept_per_lang": dict(lang_kept),
        "train_posts_per_lang": dict(lang_train), "filter_dropped": report["dropped"],
        "filter_relabelled": dict(detected.most_common(6)),
        "vocab": {"size": len(text.space.words), **vocab}, "queries": diag,
        "translation_cosine": translation_cosine(text.space, tsv_rows, ym),
        "ridge_train_images": len(train_posts), "corpus": built,
        "seconds": {"text": round(t_text, 1), "total": round(time.monotonic() - t0, 1)},
    }


def bundle_report(bundle_dir: Path, tsv: Path) -> dict[str, Any]:
    """A trained bundle's multilingual image search: the standard columns, then every es/ca column."""
    out: dict[str, Any] = {"standard": evaluate_multilingual(bundle_dir, tsv)}
    header = list(read_multilingual_rows(tsv)[0].keys())
    every = {lang: [evaluate_multilingual(bundle_dir, tsv, {lang: c})[lang]["r10"] for c in names]
             for lang, names in columns_of(header).items()}
    out["all_columns_r10"] = every
    en = float(np.mean(every["en"]))
    out["all_columns_r10_vs_en"] = {lang: round(float(np.mean(v)) / en, 3) for lang, v in every.items()}
    return out


def main() -> int:
    """Run every variant; print a table and write ``<work>/bench_multilingual.json``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flickr8k", type=Path, default=None)
    ap.add_argument("--tsv", type=Path, required=True)
    ap.add_argument("--bundle", type=Path, default=None,
                    help="no variants: score this trained bundle (en/es/ca R@10, every column) and exit")
    ap.add_argument("--pooled", type=Path, default=None,
                    help="bench_retrieval's --linear-contrastive work folder: pooled-trunk-*-v0.npy, text/")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--variants", nargs="+", default=["50,30,20:parallel"])
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--stop", choices=("package", "glasgow-en"), default="package",
                    help="stop words: the tokenizer's own (package) or the Glasgow English list (a proposal; "
                         "patched in-process for this run, names get a -glasgow suffix)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON results (default <work>/bench_multilingual.json)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.bundle is not None:
        print(json.dumps(bundle_report(args.bundle, args.tsv)))
        return 0
    if args.flickr8k is None or args.pooled is None or args.work is None:
        ap.error("--flickr8k, --pooled and --work are needed unless --bundle is given")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.stop == "glasgow-en":
        # tokenize() looks stop_words up at call time, so the trainer's stages and the queries all see it.
        tokenizer.stop_words = glasgow_stop_words  # type: ignore[assignment]

    splits = split_names(args.flickr8k)
    ids_file = args.pooled / "text" / "caption_ids.json"
    if not ids_file.is_file():
        raise SystemExit(f"{ids_file} is missing: --pooled must be the --work folder of a full "
                         "scripts/bench_retrieval.py run")
    ids = json.loads(ids_file.read_text(encoding="utf-8"))["ids"]
    test_names = sorted(n for n, s in splits.items() if s == "test")
    # bench_retrieval pooled one row per train post of its text space: the train ids of caption_ids.json.
    pooled_train = pooled_features(args.pooled, sum(splits.get(i) == "train" for i in ids), "train")
    pooled_test_all = pooled_features(args.pooled, len(test_names), "test")
    train_ids = ids[: len(pooled_train)]
    if any(splits.get(i) != "train" for i in train_ids):
        raise SystemExit("caption_ids.json does not start with the pooled train rows")
    train_row = {name: i for i, name in enumerate(train_ids)}
    tsv_rows = read_multilingual_rows(args.tsv, set(test_names))
    covered = sorted({r["image"] for r in tsv_rows})
    pooled_test = pooled_test_all[[test_names.index(n) for n in covered]]
    test_row = {n: i for i, n in enumerate(covered)}
    log.info("%d train rows, %d covered test images, %d queries per language", len(train_row), len(covered),
             len(tsv_rows))

    # Reference (and a check of the pooled rows' order): the English-only Flickr8k space bench_retrieval
    # trained (five captions per image), the same ridge, English queries over the same test images.
    ref_space = TextSpace.load(args.pooled / "text")
    ref_targets = np.load(args.pooled / "text" / "caption_vectors.npy")[: len(pooled_train)]
    ref_pred, ref_ym = ridge_map(pooled_train, ref_targets, pooled_test, args.alpha)
    reference = multilingual_search(ref_space, ref_pred, test_row, tsv_rows, MULTILINGUAL_COLUMNS,
                                    Centering(ref_ym, ref_ym))
    log.info("English-only Flickr8k space: %s", json.dumps(reference))

    results: list[dict[str, Any]] = []
    for text in args.variants:
        r = run_variant(Variant.parse(text), args, pooled_train, train_row, pooled_test, test_row, tsv_rows,
                        splits)
        results.append(r)
        log.info("%s: %s", r["variant"], json.dumps(r, ensure_ascii=False))
        out = args.out or args.work / "bench_multilingual.json"
        out.write_text(json.dumps({"reference_english_space": reference, "results": results}, indent=1,
                                  ensure_ascii=False), encoding="utf-8")

    print(f"English-only Flickr8k space, same ridge: en R@10 {reference['en']['r10']:.1f}")
    print("| variant | en R@10 | es R@10 (×en) | ca R@10 (×en) | es, 4 cols (×en) | ca, 4 cols (×en) "
          "| ca/en 90% CI |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        s, a = r["search"], r["all_columns"]
        print(f"| {r['variant']} | {s['en']['r10']:.1f} | {s['es']['r10']:.1f} ({s['es']['r10_vs_en']:.2f}) "
              f"| {s['ca']['r10']:.1f} ({s['ca']['r10_vs_en']:.2f}) "
              f"| {a['es']['r10_mean']:.1f} ({a['es']['r10_vs_en']:.2f}) "
              f"| {a['ca']['r10_mean']:.1f} ({a['ca']['r10_vs_en']:.2f}) "
              f"| {r['ratio_90pct_bootstrap']['ca']} |")
    print(f"({len(covered)} test images, {len(tsv_rows)} queries per language column, centred ridge map)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
