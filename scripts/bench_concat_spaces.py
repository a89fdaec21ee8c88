"""Would several trained spaces side by side answer better than one? Scores bundles alone and concatenated.

    python scripts/bench_concat_spaces.py BUNDLE BUNDLE [BUNDLE …]

Each bundle's test images and captions are embedded as ``train eval`` embeds them
(:func:`train.evaluate.split_vectors`, centred when the bundle is served centred), normalised, and
scored alone; then every bundle's normalised vectors are concatenated (an ensemble whose cosine is the
mean of the spaces' cosines) and scored on the same 1K protocol. The bundles must share a corpus and a
test split (e.g. the same build with another ``--joint-set seed=``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from space.textspace import unit  # noqa: E402
from train.evaluate import retrieval_metrics, split_vectors  # noqa: E402


def served_unit(bundle_dir: Path) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(normalised test image vectors, normalised caption vectors, caption owners) of one bundle, as
    ``train eval`` scores them."""
    split = split_vectors(bundle_dir)
    images, texts = split.served()
    return unit(images), unit(texts), split.owner


def line(name: str, metrics: dict[str, dict[str, float]]) -> str:
    s, a = metrics["image_search"], metrics["annotation"]
    return (f"| {name} | {s['r1']:.1f} / {s['r5']:.1f} / {s['r10']:.1f} | "
            f"{a['r1']:.1f} / {a['r5']:.1f} / {a['r10']:.1f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundles", type=Path, nargs="+", help="bundle folders of one corpus")
    args = p.parse_args()
    if len(args.bundles) < 2:
        p.error("give two bundles or more")
    parts = [served_unit(b) for b in args.bundles]
    owners = {tuple(owner) for _, _, owner in parts}
    if len(owners) != 1:
        print("the bundles do not share a test split", file=sys.stderr)
        return 2
    print("| space | image search R@1 / R@5 / R@10 | annotation R@1 / R@5 / R@10 |\n|---|---|---|")
    for b, (images, texts, owner) in zip(args.bundles, parts, strict=True):
        print(line(b.name, retrieval_metrics(images, texts, owner)))
    images = np.concatenate([im for im, _, _ in parts], axis=1)
    texts = np.concatenate([tx for _, tx, _ in parts], axis=1)
    print(line(f"{len(parts)} side by side", retrieval_metrics(images, texts, parts[0][2])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
