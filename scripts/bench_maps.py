"""t-SNE photo mosaics of all of Flickr8k: time, sampling and trustworthiness of the layout.

Caption vectors (a 100-d, 10-epoch Word2Vec + TF-IDF over all 8,091 images' captions, to keep the run
short) → ``train.report.write_image_maps`` at 1024/2048/4096 px.
Usage: python scripts/bench_maps.py OUT_DIR [--flickr8k ../shared/data/flickr8k]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from gensim.models import Word2Vec

from space.textspace import TextSpace
from space.tokenize import tokenize
from train.report import ReportConfig, write_image_maps


def main() -> None:
    """Build caption vectors, draw the maps, print timing and layout quality."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", type=Path)
    ap.add_argument("--flickr8k", type=Path, default=Path("../shared/data/flickr8k"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    caps: dict[str, list[str]] = defaultdict(list)
    for line in (args.flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        caps[name.split("#")[0]].append(text.strip())
    names = sorted(n for n in caps if (args.flickr8k / "images" / n).is_file())
    docs = [tokenize(" ".join(caps[n])) for n in names]
    t = time.time()
    sentences = [tokenize(c) for n in names for c in caps[n]]
    w2v = Word2Vec(sentences, vector_size=100, window=8, min_count=5, epochs=10, workers=2, seed=1)
    words = list(w2v.wv.index_to_key)
    df = Counter(w for d in docs for w in set(d))
    idf = np.array([math.log2(len(docs) / df[w]) if df[w] else 0.0 for w in words], dtype=np.float32)
    counts = np.array([w2v.wv.get_vecattr(w, "count") for w in words])
    space = TextSpace(words, w2v.wv.vectors.copy(), idf, counts)
    vecs = np.stack([v if (v := space.embed_tokens(d)[0]) is not None else np.zeros(space.dim) for d in docs])
    print("caption vectors", round(time.time() - t, 1), "s", vecs.shape, flush=True)
    t = time.time()
    stats = write_image_maps(
        args.out, [args.flickr8k / "images" / n for n in names], vecs, ReportConfig(show_progress=False)
    )
    print("maps", round(time.time() - t, 1), "s")
    print(json.dumps({k: v for k, v in stats.items() if k != "files"}, indent=1))


if __name__ == "__main__":
    main()
