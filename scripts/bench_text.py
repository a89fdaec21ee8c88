"""Time `train text` on all 40,455 Flickr8k captions at the original settings (300-d, window 8, 50 epochs,
min_count 5, all cores), with the neighbours of a few words as a sanity check. Usage::

    python scripts/bench_text.py [--flickr8k PATH] [--epochs N]
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

from train.config import IngestConfig, TextConfig
from train.corpus.ingest import ingest
from train.text.word2vec import build_text_space, related

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"


def main() -> None:
    """Run the benchmark and print timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--flickr8k", type=Path, default=DEFAULT_FLICKR)
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args()
    cfg = TextConfig()
    if args.epochs:
        cfg = replace(cfg, epochs=args.epochs)
    t0 = time.monotonic()
    posts, _ = ingest(IngestConfig(args.flickr8k, "flickr8k"))
    t_ingest = time.monotonic() - t0
    result = build_text_space(posts, cfg)
    total = time.monotonic() - t0
    print(f"cores {os.cpu_count()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{len(posts)} posts, {result.stats['n_sentences']} sentences, {result.stats['n_tokens']} tokens")
    print(f"config: {cfg}")
    print(
        f"ingest {t_ingest:.1f}s, word2vec {result.stats['word2vec_seconds']:.1f}s, "
        f"text stage {result.stats['seconds']:.1f}s, total {total:.1f}s; vocab {result.stats['vocab']}"
    )
    for word in ("dog", "beach", "snow", "bicycle"):
        print(f"  {word}: {', '.join(w for w, _ in related(result.space, word, 8)[0])}")


if __name__ == "__main__":
    main()
