"""Measure the language filter on the FULL columns of the multilingual Flickr8k TSV.

Share of captions kept per column (kept: en/es/ca at probability ≥ the filter's threshold), the share
assigned to the column's own language, and the time per caption with detection spread over ``--workers``
processes as the trainer's filter does (one per core by default). Usage::

    python scripts/bench_language_filter.py [--tsv PATH] [--rows N] [--workers N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from train.config import FilterConfig
from train.corpus.filters import LanguageDetector
from train.corpus.multilingual import read_tsv

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TSV = ROOT.parent / "shared" / "data" / "flickr8k-multilingual" / "flickr8k_multi30k_es_ca.tsv"
TRUTH = {"en": "en", "es": "es", "ca": "ca", "de": "de", "fr": "fr", "cs": "cs"}


def main() -> None:
    """Run the benchmark and print a table (or JSON)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tsv", type=Path, default=DEFAULT_TSV)
    parser.add_argument("--rows", type=int, default=None, help="only the first N rows (a quicker timing)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="detection processes (default: one per core, as the trainer)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    cfg = FilterConfig()
    rows = read_tsv(args.tsv)[: args.rows]
    columns = [c for c in rows[0] if c.split("_")[0] in TRUTH]
    detector = LanguageDetector()
    results = {}
    t0 = time.monotonic()
    detector.warm([r[c] for c in columns for r in rows if r[c].strip()], args.workers)
    for column in columns:
        truth = column.split("_")[0]
        texts = [r[column] for r in rows if r[column].strip()]
        picks = [detector.pick(t, cfg.languages, cfg.language_min_prob) for t in texts]
        kept = sum(ok for _, ok in picks)
        right = sum(lang == truth for lang, _ in picks)
        results[column] = {"n": len(texts), "kept": kept / len(texts), "own_language": right / len(texts)}
    seconds = time.monotonic() - t0
    if args.json:
        out = {"columns": results, "seconds": round(seconds, 1), "workers": args.workers}
        print(json.dumps(out, indent=2))
        return
    print(f"{'column':<26} {'n':>6} {'kept %':>8} {'own lang %':>11}")
    for column, r in results.items():
        print(f"{column:<26} {r['n']:>6} {100 * r['kept']:>8.2f} {100 * r['own_language']:>11.2f}")
    n = sum(r["n"] for r in results.values())
    each = 1000 * seconds / n
    print(f"{n} captions in {seconds:.0f}s ({each:.1f} ms each; {args.workers} detection processes)")


if __name__ == "__main__":
    main()
