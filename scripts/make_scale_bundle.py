"""A bundle of the original's size from a real one: its image and caption vectors replicated with noise.

The engine's costs at the original's scale (325,253 kept posts, about 260,000 of them training posts that
vote for hashtags) are measured on this bundle (``scripts/bench_engine_scale.py``). It is built from a real
joint-recipe bundle (e.g. the default recipe on Flickr8k, 300-d):

- each post copies a source post (a training post's copies are training posts, drawn from the source's
  training posts, so their hashtag votes are the source's), its image and caption vectors the source's
  plus isotropic Gaussian noise, scaled so that a copy is as far from its source as the source's typical
  nearest neighbour (measured on the source: copies spread like other photos, not as 40 identical ones);
- languages in shares plausible for Barcelona's Instagram posts (``--langs``, default English 45 %,
  Spanish 35 %, Catalan 20 %); a Spanish or Catalan post's caption is the Flickr8k multilingual corpus's
  translation of its source photo's first caption when ``--multilingual`` names it (the vectors stay the
  English source's: the benchmark measures costs, not answers);
- a word vocabulary of ``--words`` words (default 60,000): the source's words in their rows, then
  Spanish and Catalan words of the translations and made-up words, each vector a mix of two source
  words' plus noise, with Zipf-like counts;
- the source's hashtag model, its voting posts the copies of the training posts, with per-language
  candidate masks (a candidate is in Spanish or Catalan with probability 0.7);
- ``images.json`` items with Instagram-like ids (11 characters), users and dates, each path the source
  photo's file; the source's encoder; indexes built as ``train all`` builds them (f16), published with
  ``space.bundle.publish`` (item table and verification stamp included); with ``--map``, the report's
  t-SNE of all photos, its mosaics and the map's tile pyramid (``train.report.write_image_maps``).

``--photos 0`` republishes the source unchanged in the current bundle format (with ``--map``, its map;
with ``--map-from DIR``, the pyramid ``scripts/bench_map_scale.py`` drew into ``DIR/map``).

    python scripts/make_scale_bundle.py --source var/full/$(cat var/full/ACTIVE) --models var/scale \\
        --multilingual ../shared/data/flickr8k-multilingual/flickr8k_multi30k_es_ca.tsv [--map]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import shutil
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from space import bundle
from space.hashtags import HASHTAGS_FILE, POOL_INDEX, Hashtagger
from space.textspace import JOINT_WORDS_FILE, VOCAB_FILE, WORDS_FILE, unit
from space.tokenize import tokenize
from space.vectorindex import build_bundle_indexes, build_text_indexes

log = logging.getLogger("make_scale_bundle")

ORIGINAL_KEPT = 325_253
ID_CHARS = string.ascii_letters + string.digits + "-_"


@dataclass(frozen=True)
class ScaleConfig:
    """What the synthetic bundle holds."""

    source: Path
    models: Path
    photos: int
    train_share: float
    langs: tuple[tuple[str, float], ...]
    words: int
    multilingual: Path | None
    index_dtype: str
    seed: int
    map: bool
    tsne_max_fit: int
    map_from: Path | None = None  # a report folder whose map/ (scripts/bench_map_scale.py drew it) is copied
    reindex_text: bool = False  # rebuild the indexes text queries walk (space.vectorindex.build_text_indexes)


def _noise_scale(vectors: np.ndarray, rng: np.random.Generator, sample: int = 2000) -> float:
    """Per-dimension std of isotropic noise that puts a copy as far from its source (cosine) as the median
    source row is from its nearest other row: cos(u, u + n) ≈ 1 / sqrt(1 + D s²) for unit u."""
    x = unit(np.asarray(vectors, np.float32))
    idx = rng.choice(len(x), size=min(sample, len(x)), replace=False)
    sims = x[idx] @ x.T
    sims[np.arange(len(idx)), idx] = -np.inf
    c = float(np.clip(np.median(sims.max(axis=1)), 0.05, 0.999))
    return float(np.sqrt((1.0 / c**2 - 1.0) / x.shape[1]))


def _noisy_copies(vectors: np.ndarray, sources: np.ndarray, scale: float, rng: np.random.Generator,
                  chunk: int = 50_000) -> np.ndarray:
    """Unit source rows plus noise of per-dimension std ``scale``, scaled back to the source's norm."""
    out = np.empty((len(sources), vectors.shape[1]), np.float32)
    norms = np.linalg.norm(vectors, axis=1)
    for start in range(0, len(sources), chunk):
        src = sources[start:start + chunk]
        base = unit(np.asarray(vectors[src], np.float32))
        noisy = unit(base + rng.normal(scale=scale, size=base.shape).astype(np.float32))
        out[start:start + len(src)] = noisy * norms[src, None]
    return out


def _translations(path: Path | None) -> dict[str, dict[str, str]]:
    """Flickr8k image name → {"es": caption, "ca": caption} from the multilingual TSV."""
    if path is None:
        return {}
    out: dict[str, dict[str, str]] = {}
    with path.open(encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["image"], {"es": row.get("es_nllb_from_en") or "",
                                          "ca": row.get("ca_apertium_from_es_en") or ""})
    return out


def _vocabulary(src_words: list[str], translations: dict[str, dict[str, str]], size: int,
                rng: np.random.Generator) -> list[str]:
    """The source's words, then Spanish and Catalan words of the translations, then made-up words."""
    words = list(src_words)
    seen = set(words)
    extra: list[str] = []
    for captions in translations.values():
        for lang in ("es", "ca"):
            for token in tokenize(captions[lang], language=lang):
                if token not in seen and token.isalpha():
                    seen.add(token)
                    extra.append(token)
    words += extra[: max(0, size - len(words))]
    syllables = np.array(sorted({w[i:i + 3] for w in words if w.isalpha()
                                 for i in range(0, max(1, len(w) - 2), 2)}))
    for _ in range(1000):  # rounds of 1,024 tries; a tiny source runs out of new combinations
        if len(words) >= size or not len(syllables):
            break
        for parts in np.split(rng.choice(syllables, size=4 * 1024), 1024):
            word = "".join(parts[:int(rng.integers(2, 5))])
            if word not in seen and 3 <= len(word) <= 18 and len(words) < size:
                seen.add(word)
                words.append(word)
    words += [f"word{i}" for i in range(size - len(words))]
    return words[:max(size, len(src_words))]


def _word_vectors(source: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The source rows, then rows mixing two source words plus noise (spread like real words)."""
    v0 = len(source)
    if n <= v0:
        return np.asarray(source[:n], np.float32)
    a, b = rng.integers(0, v0, n - v0), rng.integers(0, v0, n - v0)
    t = rng.uniform(0.3, 0.7, (n - v0, 1)).astype(np.float32)
    std = float(np.std(source))
    mixed = t * source[a] + (1 - t) * source[b] + rng.normal(scale=0.3 * std, size=(n - v0, source.shape[1]))
    return np.concatenate([np.asarray(source, np.float32), mixed.astype(np.float32)])


def _ids(n: int, rng: np.random.Generator) -> list[str]:
    """Unique Instagram-like shortcodes of 11 characters."""
    chars = np.array(list(ID_CHARS))
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        for code in ("".join(row) for row in chars[rng.integers(0, len(chars), (n - len(out), 11))]):
            if code not in seen:
                seen.add(code)
                out.append(code)
    return out


def build(cfg: ScaleConfig) -> Path:
    """Write, index and publish the synthetic bundle; return its folder."""
    rng = np.random.default_rng(cfg.seed)
    src = cfg.source
    manifest = bundle.read_manifest(src)  # read only: the source may be shared (no stamp written)
    meta = json.loads((src / bundle.IMAGE_META).read_text(encoding="utf-8"))
    src_items: list[dict[str, Any]] = meta["items"]
    images = np.load(src / bundle.IMAGE_VECTORS)
    captions = np.load(src / bundle.CAPTION_VECTORS)
    tagger = Hashtagger.load(src)
    if tagger is None:
        raise SystemExit(f"{src} has no hashtag model: use a joint-recipe bundle")
    with bundle.staging(cfg.models) as tmp:
        if cfg.photos == 0:
            for p in src.iterdir():
                if p.name in (bundle.MANIFEST, bundle.STAMP) or p.name == "items":
                    continue
                (shutil.copytree if p.is_dir() else shutil.copy2)(p, tmp / p.name)
            items = src_items
            image_paths = [str(it["path"]) for it in items]
            vectors_for_map = images
        else:
            items, image_paths, vectors_for_map = _synthesise(cfg, tmp, rng, src, meta, images, captions,
                                                              tagger)
        # A republished bundle of the current format keeps its own indexes.
        if cfg.photos or not (tmp / POOL_INDEX).is_file():
            started = time.monotonic()
            build_bundle_indexes(tmp, dtype=cfg.index_dtype)
            log.info("indexes built in %.0f s", time.monotonic() - started)
        elif cfg.reindex_text:
            started = time.monotonic()
            build_text_indexes(tmp, dtype=cfg.index_dtype)
            log.info("text indexes built in %.0f s", time.monotonic() - started)
        if cfg.map_from is not None:
            shutil.rmtree(tmp / bundle.REPORT_DIR / "map", ignore_errors=True)
            shutil.copytree(cfg.map_from / "map", tmp / bundle.REPORT_DIR / "map")
        if cfg.map:
            from train.report import ReportConfig, write_image_maps

            started = time.monotonic()
            summary = write_image_maps(tmp / bundle.REPORT_DIR, image_paths, vectors_for_map,
                                       ReportConfig(tsne_max_fit=cfg.tsne_max_fit, mosaic_sizes=(1024, 2048)))
            log.info("map drawn in %.0f s: %s", time.monotonic() - started,
                     json.dumps({k: summary.get(k) for k in ("tsne_seconds", "seconds", "assignment")}))
            _merge_stats(tmp / bundle.REPORT_DIR, summary)
        fields: dict[str, Any] = {k: manifest[k] for k in ("config", "metrics", "topic", "encoder", "text")
                                  if k in manifest}
        langs: dict[str, int] = {}
        for it in items:
            langs[str(it.get("lang") or "unknown")] = langs.get(str(it.get("lang") or "unknown"), 0) + 1
        fields["filter_report"] = {**(manifest.get("filter_report") or {}), "kept": len(items),
                                   "total": len(items), "languages": langs}
        fields["corpus"] = {"synthetic": {
            "source": str(src), "source_version": manifest.get("version"), "photos": len(items),
            "languages": dict(cfg.langs), "words": cfg.words, "seed": cfg.seed,
            "train_share": cfg.train_share}} if cfg.photos else manifest.get("corpus")
        started = time.monotonic()
        final = bundle.publish(tmp, cfg.models, fields)
        log.info("published %s in %.0f s", final, time.monotonic() - started)
    return final


def _synthesise(cfg: ScaleConfig, tmp: Path, rng: np.random.Generator, src: Path, meta: dict[str, Any],
                images: np.ndarray, captions: np.ndarray,
                tagger: Hashtagger) -> tuple[list[dict[str, Any]], list[str], np.ndarray]:
    """Write the synthetic vectors, vocabulary, hashtag model, items and report stats into ``tmp``."""
    src_items: list[dict[str, Any]] = meta["items"]
    n = cfg.photos
    n_train = round(n * cfg.train_share)
    train_src = np.asarray(tagger.pool, dtype=np.int64)
    sources = np.concatenate([rng.choice(train_src, n_train), rng.integers(0, len(images), n - n_train)])
    splits = ["train"] * n_train + ["val" if r < 0.25 else "test" for r in rng.random(n - n_train)]
    log.info("%d posts: %d training posts copied from %d, the rest from all %d", n, n_train, len(train_src),
             len(images))
    img_scale = _noise_scale(images, rng)
    cap_scale = _noise_scale(captions, rng)
    log.info("noise per dimension: images %.4f, captions %.4f", img_scale, cap_scale)
    np.save(tmp / bundle.IMAGE_VECTORS, _noisy_copies(images, sources, img_scale, rng))
    np.save(tmp / bundle.CAPTION_VECTORS, _noisy_copies(captions, sources, cap_scale, rng))

    codes = [code for code, _ in cfg.langs]
    shares = np.array([share for _, share in cfg.langs], dtype=float)
    lang_of = rng.choice(len(codes), size=n, p=shares / shares.sum())
    translations = _translations(cfg.multilingual)
    ids = _ids(n, rng)
    users = [f"user{u:06d}" for u in rng.integers(0, max(1, n // 5), n)]
    days = rng.integers(0, 366, n)
    items: list[dict[str, Any]] = []
    for i in range(n):
        s = int(sources[i])
        base = src_items[s]
        lang = codes[int(lang_of[i])]
        name = Path(str(base["path"])).name
        caption = translations.get(name, {}).get(lang) or str(base.get("caption", ""))
        items.append({
            "key": i, "post_id": ids[i], "path": str(base["path"]), "caption": caption,
            "captions": [caption], "split": splits[i], "lang": lang, "user": users[i],
            "taken_at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(1451606400 + int(days[i]) * 86400
                                                                       + i % 86400)),
        })
    (tmp / bundle.IMAGE_META).write_text(json.dumps({"corpus_root": meta.get("corpus_root", ""),
                                                     "items": items}, ensure_ascii=False), encoding="utf-8")

    vocab = json.loads((src / VOCAB_FILE).read_text(encoding="utf-8"))
    words = _vocabulary(list(vocab["words"]), translations, cfg.words, rng)
    v0 = len(vocab["words"])
    np.save(tmp / WORDS_FILE, _word_vectors(np.load(src / WORDS_FILE), len(words), rng))
    if (src / JOINT_WORDS_FILE).is_file():
        np.save(tmp / JOINT_WORDS_FILE, _word_vectors(np.load(src / JOINT_WORDS_FILE), len(words), rng))
    scale = n / len(images)
    ranks = np.arange(1, len(words) - v0 + 1)
    counts = [int(c * scale) for c in vocab["counts"]] + [max(5, int(2000 * scale / r ** 0.9)) for r in ranks]
    idf = [float(np.log2(n / max(1, min(n, c)))) for c in counts]
    (tmp / VOCAB_FILE).write_text(json.dumps({"words": words, "counts": counts,
                                              "idf": [round(x, 6) for x in idf]}, ensure_ascii=False),
                                  encoding="utf-8")

    # Voting posts: the copies of training posts, each with its source's caption candidates.
    position = {int(r): p for p, r in enumerate(tagger.pool.tolist())}
    pool_src = [position[int(s)] for s in sources[:n_train]]
    lengths = np.array([tagger.indptr[p + 1] - tagger.indptr[p] for p in pool_src], dtype=np.int64)
    indptr = np.zeros(n_train + 1, dtype=tagger.indptr.dtype)
    np.cumsum(lengths, out=indptr[1:])
    indices = np.concatenate([tagger.indices[tagger.indptr[p]:tagger.indptr[p + 1]] for p in pool_src]) \
        if pool_src else np.zeros(0, tagger.indices.dtype)
    in_language = np.stack([np.ones(len(tagger.rows), bool) if code == "en"
                            else rng.random(len(tagger.rows)) < 0.7 for code in codes])
    Hashtagger(tagger.rows, tagger.weight, tagger.bias, np.arange(n_train), indptr,
               indices.astype(tagger.indices.dtype), tuple(codes), in_language).save(tmp)
    assert (tmp / HASHTAGS_FILE).is_file()

    shutil.copyfile(src / bundle.ENCODER, tmp / bundle.ENCODER)
    report = tmp / bundle.REPORT_DIR
    report.mkdir()
    stats = json.loads((src / bundle.REPORT_DIR / "stats.json").read_text(encoding="utf-8")) \
        if (src / bundle.REPORT_DIR / "stats.json").is_file() else {}
    langs: dict[str, int] = {}
    for it in items:
        langs[str(it["lang"])] = langs.get(str(it["lang"]), 0) + 1
    stats.update({"corpus": {"posts": n, "images": n, "captions": n},
                  "languages": {k: {"posts": v, "share": round(v / n, 6)}
                                for k, v in sorted(langs.items(), key=lambda kv: -kv[1])},
                  "files": {}, "image_maps": {"skipped": "synthetic bundle without --map"}})
    (report / "stats.json").write_text(json.dumps(stats, ensure_ascii=False, indent=1), encoding="utf-8")
    return items, [it["path"] for it in items], np.load(tmp / bundle.IMAGE_VECTORS, mmap_mode="r")


def _merge_stats(report: Path, summary: dict[str, Any]) -> None:
    """Record the map in report/stats.json (what the web page's analyses and /v1/stats read)."""
    path = report / "stats.json"
    stats = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    files = summary.pop("files", {})
    stats["image_maps"] = summary
    stats.setdefault("files", {}).update(files)
    path.write_text(json.dumps(stats, ensure_ascii=False, indent=1), encoding="utf-8")


def _langs(text: str) -> tuple[tuple[str, float], ...]:
    pairs = []
    for part in text.split(","):
        code, _, share = part.partition("=")
        pairs.append((code.strip(), float(share)))
    return tuple(pairs)


def main() -> None:
    """Parse arguments and build the bundle."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="a joint-recipe bundle folder")
    parser.add_argument("--models", type=Path, required=True, help="models folder to publish into")
    parser.add_argument("--photos", type=int, default=ORIGINAL_KEPT, help="posts (0: republish the source)")
    parser.add_argument("--train-share", type=float, default=0.8, help="share of training (voting) posts")
    parser.add_argument("--langs", type=_langs, default=_langs("en=0.45,es=0.35,ca=0.20"),
                        help="language shares, e.g. en=0.45,es=0.35,ca=0.20")
    parser.add_argument("--words", type=int, default=60_000, help="vocabulary size")
    parser.add_argument("--multilingual", type=Path, default=None,
                        help="flickr8k_multi30k_es_ca.tsv: Spanish and Catalan captions")
    parser.add_argument("--index-dtype", default="f16", choices=("f32", "f16", "bf16", "i8"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--map", action="store_true", help="draw the report's map of every photo (slow)")
    parser.add_argument("--tsne-max-fit", type=int, default=100_000,
                        help="t-SNE fits this many photos and places the others into it")
    parser.add_argument("--reindex-text", action="store_true",
                        help="with --photos 0: rebuild the indexes text queries walk")
    parser.add_argument("--map-from", type=Path, default=None,
                        help="copy the map pyramid drawn under this folder (bench_map_scale.py's OUT_DIR)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ScaleConfig(args.source.resolve(), args.models.resolve(), args.photos, args.train_share, args.langs,
                      args.words, args.multilingual, args.index_dtype, args.seed, args.map, args.tsne_max_fit,
                      args.map_from, args.reindex_text)
    print(build(cfg))


if __name__ == "__main__":
    main()
