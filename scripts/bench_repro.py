"""Reproducibility: the same corpus and settings, built N times from fresh clones, scored the same way.

    python scripts/bench_repro.py --flickr8k ../shared/data/flickr8k \
        --weights ../shared/weights/bvlc_googlenet --work var/repro [--builds 3] [-- TRAIN_ARGS…]

Each build is a fresh ``git clone`` of this repository at the HEAD the run started from (the committed
code, nothing of the working tree) with its own models folder, so nothing is shared between builds:
not the feature store, not the text stage, not the language cache. Each clone runs ``python -m train
all`` on Flickr8k (by default with ``--quick``; the arguments after ``--`` replace that, and ``--``
alone builds the default bundle) and then its own ``scripts/bench_answers.py`` on the bundle. The table
gives every figure of every build and its spread (largest minus smallest); a spread over
``--tolerance`` (0.2 points, the project's bar) fails the run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# (label, path in bench_answers' JSON)
FIGURES = (
    ("hashtags P@5", ("hashtags", "bundle", "p5")),
    ("hashtags, one right", ("hashtags", "bundle", "one_right")),
    ("word → images P@10, whole corpus", ("words", "corpus_p10")),
    ("word → images P@10, pixels only", ("words", "test_pixels_p10")),
    ("image search R@1", ("retrieval", "image_search", "r1")),
    ("image search R@5", ("retrieval", "image_search", "r5")),
    ("image search R@10", ("retrieval", "image_search", "r10")),
    ("annotation R@1", ("retrieval", "annotation", "r1")),
    ("annotation R@5", ("retrieval", "annotation", "r5")),
    ("annotation R@10", ("retrieval", "annotation", "r10")),
    ("misspelt words matched", ("typos", "recovered")),
)


def figure(result: dict[str, Any], path: tuple[str, ...]) -> float:
    value: Any = result
    for key in path:
        value = value[key]
    return float(value)


def build(i: int, rev: str, work: Path, args: argparse.Namespace, train_args: list[str]) -> dict[str, Any]:
    """One fresh clone of ``rev``, one `train all`, one `bench_answers`; the answers' JSON plus the time."""
    clone = work / f"clone-{i}"
    subprocess.run(["rm", "-rf", str(clone)], check=True)
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=clone, check=True)
    head = rev[:7]
    models = clone / "var" / "models"
    env_python = sys.executable
    started = time.monotonic()
    cmd = [env_python, "-m", "train", "all", "--corpus", str(args.flickr8k.resolve()), "--format", "flickr8k",
           "--weights", str(args.weights.resolve()), "--models", str(models), *train_args]
    print(f"build {i} ({head}): {' '.join(cmd[1:])}", flush=True)
    with open(work / f"build-{i}.log", "w") as log:
        subprocess.run(cmd, cwd=clone, check=True, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    bundle = models / (models / "ACTIVE").read_text().strip()
    out = work / f"answers-{i}.json"
    with open(work / f"answers-{i}.log", "w") as log:
        subprocess.run([env_python, "scripts/bench_answers.py", str(bundle), "--flickr8k",
                        str(args.flickr8k.resolve()), "--json", str(out)],
                       cwd=clone, check=True, stdout=log, stderr=subprocess.STDOUT)
    result: dict[str, Any] = json.loads(out.read_text())
    result["build_seconds"] = seconds
    result["commit"] = head
    if not args.keep:
        subprocess.run(["rm", "-rf", str(clone)], check=True)
    return result


def table(results: list[dict[str, Any]], tolerance: float) -> tuple[str, bool]:
    """The markdown table of every figure per build and its spread; whether every spread is in tolerance."""
    heads = " | ".join(f"build {i + 1}" for i in range(len(results)))
    lines = [f"| figure | {heads} | spread |", "|---|" + "---|" * len(results) + "---|"]
    ok = True
    for label, path in FIGURES:
        values = [figure(r, path) for r in results]
        spread = max(values) - min(values)
        ok &= spread <= tolerance + 1e-9
        cells = " | ".join(f"{v:.2f}" for v in values)
        lines.append(f"| {label} | {cells} | {spread:.2f} |")
    minutes = " | ".join(f"{r['build_seconds'] / 60:.1f} min" for r in results)
    lines.append(f"| `train all` time | {minutes} | |")
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # `--` alone asks for `train all`'s defaults; no `--` at all, for --quick
    own, train_args = ((argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv
                       else (argv, ["--quick"]))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flickr8k", type=Path, required=True, help="the Flickr8k folder")
    p.add_argument("--weights", type=Path, required=True, help="the BVLC GoogLeNet weights folder")
    p.add_argument("--work", type=Path, default=Path("var/repro"), help="clones, logs and results go here")
    p.add_argument("--builds", type=int, default=3, help="how many fresh builds")
    p.add_argument("--tolerance", type=float, default=0.2, help="the largest spread allowed, in points")
    p.add_argument("--keep", action="store_true", help="keep each clone and its bundle")
    args = p.parse_args(own)
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # every build of one commit: HEAD when the run starts, whatever is committed meanwhile
    rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout.strip()
    results = [build(i + 1, rev, work, args, train_args) for i in range(args.builds)]
    (work / "results.json").write_text(json.dumps(results, indent=1))
    text, ok = table(results, args.tolerance)
    print(text)
    print("every spread within" if ok else "a spread is over", f"{args.tolerance} points")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
