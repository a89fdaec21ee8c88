"""Builds the small real bundle the engine and bot tests serve: the trainer's own pipeline in quick mode.

``python -m train all --quick`` on the first ``n`` Flickr8k images (standard splits), with the image
stage cut to one epoch over one cached view per image so the whole build stays around two minutes on
two cores. The same arguments through the CLI reuse every cached stage (tests/train/test_pipeline.py).
"""

from __future__ import annotations

from pathlib import Path

N_IMAGES = 300
# One epoch on one view per image: the quick preset's other settings, at CI cost.
IMAGE_SETTINGS = ("epochs=1", "train_views=1")
PROGRESS_FILE = ".progress.jsonl"


def small_bundle_args(models: Path, flickr8k: Path, weights: Path, n: int = N_IMAGES) -> list[str]:
    """The `python -m train` arguments the small bundle is built with."""
    args = [
        "all",
        "--corpus",
        str(flickr8k),
        "--format",
        "flickr8k",
        "--models",
        str(models),
        "--weights",
        str(weights),
        "--quick",
        "--limit",
        str(n),
        "--progress-file",
        str(models / PROGRESS_FILE),
    ]
    for setting in IMAGE_SETTINGS:
        args += ["--image-set", setting]
    return args


def build_small_bundle(models: Path, flickr8k: Path, weights: Path, n: int = N_IMAGES) -> Path:
    """Train, publish and activate a quick bundle under ``models``; return its path."""
    from space.bundle import read_manifest
    from train.__main__ import build_parser, pipeline_config
    from train.pipeline import build_bundle
    from train.progress import ProgressReporter

    cfg = pipeline_config(build_parser().parse_args(small_bundle_args(models, flickr8k, weights, n)))
    progress = ProgressReporter(cfg.progress_file, bars=False)
    try:
        path = build_bundle(cfg, progress)
    except BaseException as exc:
        progress.failed(str(exc))
        raise
    progress.finished(path, str(read_manifest(path)["version"]))
    return path
