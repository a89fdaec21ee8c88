"""A stand-in for `python -m train all` that speaks the progress-file protocol (for the /retrain tests)."""

from __future__ import annotations

import argparse
import json
import sys
import time


def main() -> None:
    """Write a few progress lines, then done (or failed)."""
    p = argparse.ArgumentParser()
    p.add_argument("--corpus")
    p.add_argument("--format")
    p.add_argument("--models")
    p.add_argument("--weights")
    p.add_argument("--progress-file", required=True)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--step-s", type=float, default=0.2)
    p.add_argument("--fail", action="store_true")
    a = p.parse_args()
    started = time.monotonic()
    with open(a.progress_file, "a", encoding="utf-8") as f:
        for i in range(a.steps):
            elapsed = time.monotonic() - started
            rate = (i / elapsed) if elapsed > 0 else 0.0
            eta = (a.steps - i) / rate if rate else None
            f.write(
                json.dumps(
                    {
                        "stage": "image",
                        "done": i,
                        "total": a.steps,
                        "unit": "epochs",
                        "rate": rate,
                        "elapsed": elapsed,
                        "eta": eta,
                    }
                )
                + "\n"
            )
            f.flush()
            time.sleep(a.step_s)
        if a.fail:
            f.write(json.dumps({"stage": "failed", "error": "corpus is empty"}) + "\n")
            sys.exit(1)
        f.write(json.dumps({"stage": "done", "bundle": f"{a.models}/v-fake", "version": "v-fake"}) + "\n")
    print(f"{a.models}/v-fake")


if __name__ == "__main__":
    main()
