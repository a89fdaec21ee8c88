"""The spelling fallback's cost per request: ``/v1/related``'s answer for one unknown word of n letters.

Loads the bundle as the engine does (``engine.model.load_model``) and times ``engine.service.related`` for
three distinct random words of each length (random letters: a word of one repeated letter has almost no
distinct deletions, which hides the cost), and of the longest length still searched (the vocabulary's
longest word plus two, at most 30); prints the least and most of the three.

    python scripts/bench_spelling.py --models DIR [--lengths 20 30 300 499]
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine import service  # noqa: E402
from engine.model import load_model  # noqa: E402
from space.query import parse_query  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--lengths", type=int, nargs="+", default=[20, 30, 300, 499])
    a = p.parse_args(argv)
    model = load_model(a.models / (a.models / "ACTIVE").read_text().strip())
    rng = random.Random(28)
    longest = max(len(w) for w in model.space.words)
    # The longest word a bounded speller still searches: the vocabulary's longest plus two edits.
    print(f"longest vocabulary word: {longest} letters")
    for n in sorted({*a.lengths, min(longest + 2, 30)}):
        times = []
        for _ in range(3):
            query = parse_query("".join(rng.choices(string.ascii_lowercase, k=n)))
            started = time.perf_counter()
            service.related(model, [service.WordJob(query, 10)])
            times.append(time.perf_counter() - started)
        print(f"{n:4d} letters: {min(times) * 1000:8.1f} – {max(times) * 1000:8.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
