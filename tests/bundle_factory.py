"""Builds the small real bundle the engine and bot tests serve: the trainer's own pipeline in quick mode.

``python -m train all --quick`` (the default joint recipe) on the first ``n`` Flickr8k images (standard
splits): frozen GoogLeNet features of one crop per image, so the build takes about a minute on two
cores. The same arguments through the CLI reuse every cached stage (tests/train/test_pipeline.py).
"""

from __future__ import annotations

from pathlib import Path

N_IMAGES = 300


def work_dir(models: Path) -> Path:
    """The stage cache, beside (not inside) the models dir: tests copy models dirs around."""
    return models.parent / f"{models.name}-work"


def progress_file(models: Path) -> Path:
    """Where the build's progress lines go."""
    return models.parent / f"{models.name}-progress.jsonl"


# The seed recipe (GoogLeNet regression, centred serving) on the same images, one short epoch: the bundle
# format the joint recipe does not produce (centring, no hashtag model) stays served and tested.
SEED_ARGS = ("--recipe", "seed", "--image-set", "epochs=1", "--image-set", "train_views=1")


def small_bundle_args(models: Path, flickr8k: Path, weights: Path, n: int = N_IMAGES,
                      extra: tuple[str, ...] = ()) -> list[str]:
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
        "--work",
        str(work_dir(models)),
        "--progress-file",
        str(progress_file(models)),
        *extra,
    ]
    return args


def build_small_bundle(models: Path, flickr8k: Path, weights: Path, n: int = N_IMAGES,
                       extra: tuple[str, ...] = ()) -> Path:
    """Train, publish and activate a quick bundle under ``models``; return its path."""
    from space.bundle import read_manifest
    from train.__main__ import build_parser, pipeline_config
    from train.pipeline import build_bundle
    from train.progress import ProgressReporter

    cfg = pipeline_config(build_parser().parse_args(small_bundle_args(models, flickr8k, weights, n, extra)))
    progress = ProgressReporter(cfg.progress_file, bars=False)
    try:
        path = build_bundle(cfg, progress)
    except BaseException as exc:
        progress.failed(str(exc))
        raise
    progress.finished(path, str(read_manifest(path)["version"]))
    return path
