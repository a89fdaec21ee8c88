"""`python -m train COMMAND …`: build a bundle from a corpus (`all`), or run one step of it.

Configuration is built here once, from the arguments and the environment (``MODELS_DIR``,
``TRAIN_TOPIC``, ``TRAIN_PROGRESS_FILE``), and passed down as frozen dataclasses. `train all` prints the
bundle path LAST on stdout. `python -m train COMMAND --help` lists a command's options.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, TypeVar

from space.cli import Parser, fail
from space.envvars import Kind, SettingError, integer, number
from space.envvars import flag as flag_kind
from space.errors import SpaceError
from space.images import CROPS, FRAMINGS, check_views
from space.logs import env_secrets, redact, setup_logging
from train.config import FORMATS, RECIPES, FilterConfig, IngestConfig, PipelineConfig, TextConfig
from train.corpus.topic import Topic, load_topic, read_city_list
from train.image.features import DEFAULT_LEVELS, LEVEL_WIDTHS, POOL5, normalise_levels
from train.recipes.joint.model import JointConfig
from train.recipes.seed.config import ImageConfig

log = logging.getLogger("train")

TEXT_STAGES = ("ingest", "filter", "split", "text")
PATH = Kind("a path", Path, metavar="PATH")


def _models_arg(p: Parser) -> None:
    p.option("--models", env="MODELS_DIR", kind=PATH, default=Path("models"), metavar="DIR",
             help="models folder (bundles, ACTIVE, .work)")


def _corpus_args(p: Parser) -> None:
    p.add_argument("--corpus", type=Path, required=True, help="corpus folder or posts.jsonl")
    p.add_argument("--format", choices=FORMATS, required=True, help="how the corpus is written")
    _models_arg(p)
    p.add_argument("--weights", type=Path, default=None, help="BVLC GoogLeNet weights folder")
    p.add_argument(
        "--work", type=Path, default=None, help="work folder (default <models>/.work/<corpus-hash>)"
    )
    p.add_argument("--quick", action="store_true", help="small, fast settings (tests, smoke runs)")
    p.add_argument("--limit", type=int, default=None, help="read at most N posts")
    p.option("--topic", env="TRAIN_TOPIC", kind=PATH, default=None, metavar="FILE",
             shown_default="none, no city filter and no attractions",
             help="topic file (TOML, e.g. topics/barcelona.toml): the topic's names, other cities to "
             "drop, attractions, languages")
    p.add_argument("--languages", default=None,
                   help="languages to keep, e.g. en,es,ca (default: the topic's, else en,es,ca; empty: none)")
    p.add_argument("--max-user-posts", type=int, default=20, help="drop users with more posts (0: off)")
    p.add_argument("--cities", type=Path, default=None,
                   help="file of other-city names, one a line (replaces the topic's list)")
    p.option("--progress-file", env="TRAIN_PROGRESS_FILE", kind=PATH, default=None, metavar="PATH",
             help="append JSON progress lines here")
    p.add_argument("--no-activate", action="store_true", help="publish the bundle without activating it")
    p.add_argument("--index-dtype", choices=("f32", "f16", "bf16", "i8"), default="f16",
                   help="usearch index precision (f16, the default, halves memory and searches ~1.4x faster "
                   "than f32 at the same recall; see README, Scale)")
    p.add_argument("--recipe", choices=RECIPES, default="joint",
                   help="joint: images and words learned into one space (the default, the best measured); "
                   "seed: the original system's GoogLeNet regression onto fixed Word2Vec caption vectors")
    p.add_argument("--backbone", choices=("bvlc", "torchvision"), default="bvlc",
                   help="the joint recipe's ImageNet GoogLeNet: the BVLC blobs of --weights, or "
                   "torchvision's (downloaded on first use)")
    p.add_argument("--encode-framing", choices=FRAMINGS, default=None,
                   help="how a photo meets the network: whole (all of it scaled to 224x224; the default for "
                   "the joint recipe) or centre (the centre 224 crop of the short-side-256 photo; the seed "
                   "recipe's default)")
    p.add_argument("--encode-crops", type=int, choices=CROPS, default=None,
                   help="views averaged per bundle image: the framed view; + its mirror; + the four corner "
                   "crops and their mirrors (10, centre framing only). Default 2 (the joint recipe), 1 with "
                   "--quick or --recipe seed")
    p.add_argument("--image-levels", type=_levels, default=None, metavar="LEVELS",
                   help="the joint recipe's image features: the global means of these GoogLeNet levels, "
                   f"concatenated (any of {','.join(LEVEL_WIDTHS)}; default: {','.join(DEFAULT_LEVELS)} with "
                   "--backbone bvlc, 5b with torchvision). The recipe before levels: --image-levels 5b "
                   "--joint-set dropout=0.2")
    p.add_argument("--features", type=Path, default=None, metavar="DIR",
                   help="import image features computed elsewhere (keys.txt, features.npy, meta.json, as "
                   "python -m train.image.encode_dist writes them); photos without a row are encoded here")
    p.add_argument("--feature-part-rows", type=int, default=4096, metavar="N",
                   help="photos per feature-store part: a killed run loses at most one part or 30 s")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where the image side runs (auto: a CUDA GPU when torch sees one)")
    p.add_argument("--encode-runtime", choices=("auto", "onnx", "torch"), default="auto",
                   help="what encodes the features (auto: torch on a GPU, ONNX Runtime on the CPU)")
    p.add_argument("--joint-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one JointConfig field (repeatable), e.g. --joint-set epochs=5")
    p.add_argument("--text-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one TextConfig field (repeatable), e.g. --text-set workers=8 (faster on "
                   "big corpora; one worker, the default, makes the run reproducible)")
    p.add_argument("--image-set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override one ImageConfig field of the seed recipe (repeatable), e.g. "
                   "--image-set epochs=2")


def build_parser() -> Parser:
    """The argument parser with one subcommand per stage."""
    parser = Parser("train", __doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG (as LOG_LEVEL=DEBUG)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in (*TEXT_STAGES, "all"):
        helps = {"all": "run every stage and publish a bundle (prints its path last)"}
        _corpus_args(sub.add_parser(name, help=helps.get(name, f"run the stages up to {name} (cached)")))
    ev = sub.add_parser("eval", help="retrieval metrics of a bundle on its test split")
    ev.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the active one)")
    _models_arg(ev)
    ev.add_argument("--json", action="store_true", help="print the figures as JSON")
    rep = sub.add_parser("report", help="redraw a bundle's report")
    rep.add_argument("--bundle", type=Path, default=None, help="bundle folder (default: the active one)")
    _models_arg(rep)
    rep.add_argument("--out", type=Path, required=True, help="the folder to draw the report in")
    ml = sub.add_parser("multilingual", help="build the en/es/ca Flickr8k posts.jsonl")
    ml.add_argument("--src", type=Path, required=True, help="flickr8k_multi30k_es_ca.tsv")
    ml.add_argument("--flickr8k", type=Path, required=True, help="the Flickr8k folder (its images)")
    ml.add_argument("--out", type=Path, required=True, help="the folder to write posts.jsonl in")
    ml.add_argument("--shares", type=_shares, default="50,30,20", help="en,es,ca shares")
    ml.add_argument("--seed", type=int, default=0, help="seed of the draw of each post's language")
    ml.add_argument("--relative", action="store_true", help="image paths relative to posts.jsonl")
    ml.add_argument("--parallel", action="store_true",
                    help="train/val posts also carry their en+es+ca captions as one Word2Vec sentence")
    ml.add_argument("--references", choices=("one", "all"), default="one",
                    help="all: each post also carries every caption of its image in en, es and ca (it still "
                    "shows one)")
    ml.add_argument("--all-images", action="store_true",
                    help="Flickr8k images missing from the TSV become English posts with their five captions")
    _setup_args(sub)
    _synth_args(sub)
    return parser


def _synth_args(sub: Any) -> None:
    """`synth`: a scale corpus shaped like a real crawl, from Flickr8k (train.corpus.synth)."""
    s = sub.add_parser("synth", help="write a scale corpus shaped like a real crawl, from Flickr8k's photos")
    s.option("--posts", kind=integer(1), required=True, help="posts to write (the original read 623,199)")
    s.add_argument("--from", dest="source", type=Path, required=True, help="the Flickr8k folder")
    s.add_argument("--multilingual", type=Path, required=True,
                   help="flickr8k_multi30k_es_ca.tsv (Spanish, Catalan, German and French captions)")
    s.add_argument("--out", type=Path, required=True, help="an empty folder to write the corpus into")
    s.add_argument("--layout", choices=("jsonl", "instaloader"), default="jsonl",
                   help="posts.jsonl beside a photos folder, or one folder of instaloader downloads")
    s.option("--seed", kind=integer(0), default=0, help="the same seed writes the same bytes")
    s.option("--workers", kind=integer(1), default=None, shown_default="one a core",
             help="processes writing photos")
    s.add_argument("--topic", type=Path, default=None,
                   help="topic file whose other cities the captions name (default: a built-in list)")
    s.add_argument("--features", type=Path, default=None,
                   help="also write a features folder for `train all --features` (keys.txt, features.npy, "
                   "meta.json) from the base photos' features")
    s.add_argument("--base-features", type=Path, default=None,
                   help="the base photos' features folder: read, or computed there with --weights")
    s.add_argument("--weights", type=Path, default=None, help="BVLC GoogLeNet weights (base features)")


def _synth_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run `synth`; the summary printed as JSON."""
    from train.corpus.synth import read_base_captions, synth_config, write_synth

    cfg = synth_config(args.posts, args.source, args.out, args.multilingual, args.layout, args.seed,
                       args.workers, args.topic)
    table = None
    if args.features is not None:
        from train.corpus.synth_features import base_features
        from train.corpus.synth_photos import BaseImages

        if args.base_features is None:
            raise ValueError("--features needs --base-features DIR (with --weights the first time)")
        names = read_base_captions(cfg.source, cfg.multilingual).names
        images = BaseImages(cfg.source, names)
        table = base_features(args.base_features, [images.path(i) for i in range(len(names))], args.weights)
    return write_synth(cfg, args.features, table)


def _setup_args(sub: Any) -> None:
    """`weights` and `data`: what `train all` needs, from the files people can download."""
    w = sub.add_parser("weights", help="convert the Caffe model zoo's bvlc_googlenet.caffemodel to --weights")
    w.add_argument("--caffemodel", type=Path, required=True, help="bvlc_googlenet.caffemodel")
    w.add_argument("--out", type=Path, required=True, help="the weights folder to write")
    w.add_argument("--prototxt", type=Path, default=None, help="deploy.prototxt to copy beside (optional)")
    w.add_argument("--synsets", type=Path, default=None, help="synset_words.txt to copy beside (optional)")
    d = sub.add_parser("data", help="download (or unpack) a public corpus: flickr8k")
    d.add_argument("dataset", choices=("flickr8k",), help="the corpus to fetch")
    d.add_argument("--out", type=Path, required=True, help="the corpus folder to write")
    d.add_argument("--from", dest="sources", type=Path, action="append", default=[], metavar="ARCHIVE",
                   help="an archive you already have (Flickr8k_Dataset.zip, Flickr8k_text.zip; repeatable)")
    d.add_argument("--mirror", default=None, help="a folder URL holding both archives (default: the code's)")
    d.add_argument("--sha256", action="append", default=[], metavar="NAME=HEX",
                   help="verify an archive's checksum, e.g. Flickr8k_text.zip=<hex> (repeatable)")


def _setup_command(args: argparse.Namespace) -> dict[str, Any]:
    """Run `weights` or `data`; the summary printed as JSON."""
    if args.command == "weights":
        from train.image.caffe import convert

        return convert(args.caffemodel, args.out, args.prototxt, args.synsets)
    from train.corpus.fetch import fetch_flickr8k

    sums = dict(item.partition("=")[::2] for item in args.sha256)
    return fetch_flickr8k(args.out, args.sources, mirror=args.mirror, sha256=sums)


def check_weights(cfg: PipelineConfig) -> None:
    """One line naming both ways when the CNN has no ImageNet weights (before any stage runs)."""
    if cfg.recipe == "joint" and cfg.backbone != "bvlc" and cfg.levels != POOL5:
        raise ValueError(f"--image-levels {','.join(cfg.levels)} needs --backbone bvlc (torchvision's "
                         "GoogLeNet gives 5b's features only: --image-levels 5b)")
    if cfg.cnn_backbone != "bvlc":
        return
    if cfg.weights is None or not (cfg.weights / "SHA256SUMS").is_file():
        what = "needs --weights DIR" if cfg.weights is None else f"--weights {cfg.weights}: no SHA256SUMS"
        raise ValueError(
            f"train all {what}: the BVLC GoogLeNet blobs (convert the Caffe model zoo's "
            "bvlc_googlenet.caffemodel with `python -m train weights --caffemodel FILE --out DIR`), or "
            "--backbone torchvision (torchvision's ImageNet GoogLeNet, downloaded on first use: needs the "
            "internet; --image-set backbone=torchvision with --recipe seed)"
        )


def _shares(raw: str) -> list[float]:
    """--shares: three numbers, e.g. 50,30,20."""
    try:
        shares = [float(x) for x in raw.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 50,30,20, got {raw!r}") from None
    if len(shares) != 3 or min(shares) < 0 or sum(shares) <= 0:
        raise argparse.ArgumentTypeError(f"expected three numbers like 50,30,20, got {raw!r}")
    return shares


def _levels(raw: str) -> tuple[str, ...]:
    """--image-levels: comma-separated level names, e.g. pool4,5a,5b."""
    try:
        return normalise_levels([x.strip() for x in raw.split(",") if x.strip()])
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def check_feature_import(cfg: PipelineConfig) -> None:
    """``--features DIR`` of another backbone, crop count or width: refused in one line before any stage."""
    if cfg.features_import is None:
        return
    if cfg.recipe != "joint":
        raise ValueError("--features imports the joint recipe's CNN features; the seed recipe has none")
    from train.image.features import BACKBONES, FeatureSpec, open_import

    open_import(cfg.features_import, FeatureSpec.of(BACKBONES.get(cfg.backbone, cfg.backbone), "", cfg.crops,
                                                    cfg.levels, cfg.framing))


def _filters(args: argparse.Namespace, topic: Topic | None) -> FilterConfig:
    """The filters: languages from the flag, else the topic, else en/es/ca; other cities from the topic."""
    languages = args.languages
    if languages is None:
        given = topic.languages if topic is not None else None
        languages = ",".join(given) if given is not None else "en,es,ca"
    cities = read_city_list(args.cities) if args.cities is not None else None
    if topic is not None:
        cities = topic.cities_to_drop(cities)
    return FilterConfig(
        languages=tuple(x.strip() for x in languages.split(",") if x.strip()),
        max_posts_per_user=args.max_user_posts or None,
        other_cities=cities or (),
    )


def pipeline_config(args: argparse.Namespace) -> PipelineConfig:
    """The frozen run config from the parsed arguments."""
    topic = load_topic(args.topic) if getattr(args, "topic", None) is not None else None
    filters = _filters(args, topic)
    progress_file = args.progress_file
    image_set = getattr(args, "image_set", None)
    base_image = ImageConfig.quick_preset() if args.quick else ImageConfig()
    image = _overrides(base_image, image_set, "--image-set") if image_set else None
    joint = _overrides(JointConfig(), getattr(args, "joint_set", None) or [], "--joint-set")
    cfg = PipelineConfig(
        recipe=getattr(args, "recipe", "joint"),
        joint=joint,
        backbone=getattr(args, "backbone", "bvlc"),
        image_levels=getattr(args, "image_levels", None),
        image=image,
        ingest=IngestConfig(corpus=args.corpus, format=args.format, limit=args.limit),
        models=args.models,
        weights=args.weights,
        work=args.work,
        quick=args.quick,
        filters=filters,
        text=_overrides(TextConfig.quick() if args.quick else TextConfig(),
                        getattr(args, "text_set", None) or [], "--text-set"),
        progress_file=progress_file,
        activate=not args.no_activate,
        index_dtype=getattr(args, "index_dtype", "f16"),
        encode_crops=getattr(args, "encode_crops", None),
        encode_framing=getattr(args, "encode_framing", None),
        features_import=getattr(args, "features", None),
        feature_part_rows=max(1, getattr(args, "feature_part_rows", 4096)),
        device=getattr(args, "device", "auto"),
        encode_runtime=getattr(args, "encode_runtime", "auto"),
        topic=topic,
    )
    check_views(cfg.crops, cfg.framing)  # 10 views of the whole photo: refused in one line
    return cfg


_Config = TypeVar("_Config", ImageConfig, JointConfig, TextConfig)


def _overrides(base: _Config, settings: list[str], flag: str) -> _Config:
    """``base`` with ``FIELD=VALUE`` overrides, each coerced to the field's default's type."""
    changes: dict[str, Any] = {}
    for item in settings:
        name, sep, raw = item.partition("=")
        fields = [f.name for f in dataclasses.fields(base)]
        if not sep or name not in fields:
            raise SettingError(f"{flag} {item!r}: expected FIELD=VALUE with FIELD one of {', '.join(fields)}")
        current = getattr(base, name)
        if isinstance(current, bool):
            changes[name] = flag_kind().parse(raw, f"{flag} {name}")
        elif raw.lower() == "none":
            changes[name] = None
        elif isinstance(current, int):
            changes[name] = integer().parse(raw, f"{flag} {name}")
        elif isinstance(current, float) or name.endswith("minutes"):
            changes[name] = number().parse(raw, f"{flag} {name}")
        else:
            changes[name] = raw
    return dataclasses.replace(base, **changes)


def _bundle_arg(args: argparse.Namespace) -> Path:
    from space.bundle import active_path

    return args.bundle if args.bundle is not None else active_path(args.models)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (2: a flag or setting it does not accept, one line)."""
    parser = build_parser()
    args = parser.parse(argv)
    log_settings = parser.log_settings(args)
    if args.verbose:
        log_settings = dataclasses.replace(log_settings, level="DEBUG")
    setup_logging(log_settings, env_secrets(os.environ), quiet=("gensim", "httpx", "httpcore"))
    try:
        if args.command == "multilingual":
            from train.corpus.multilingual import build_multilingual

            summary = build_multilingual(args.src, args.flickr8k, args.out, args.shares, args.seed,
                                         args.relative, parallel=args.parallel, references=args.references,
                                         all_images=args.all_images)
            print(json.dumps(summary, ensure_ascii=False))
            return 0
        if args.command == "synth":
            print(json.dumps(_synth_command(args), ensure_ascii=False, indent=2))
            return 0
        if args.command in ("weights", "data"):
            print(json.dumps(_setup_command(args), ensure_ascii=False, indent=2))
            return 0
        if args.command == "eval":
            from train.evaluate import eval_main

            return eval_main(_bundle_arg(args), args.json)
        if args.command == "report":
            from train.report import report_from_bundle

            stats = report_from_bundle(_bundle_arg(args), args.out)
            print(json.dumps({"out": str(args.out), "keys": sorted(stats)}))
            return 0
        cfg = pipeline_config(args)
        if args.command in TEXT_STAGES:
            from train.pipeline import run_text_stages

            summary = run_text_stages(cfg, args.command)
            print(json.dumps(summary, ensure_ascii=False, indent=2, default=str))
            return 0
        return _train_all(cfg)
    except SettingError as exc:  # a FIELD=VALUE override (or a topic setting) it does not accept
        fail(parser.prog, str(exc))
    except (SpaceError, OSError, ValueError) as exc:  # OSError: unreadable input, full disk, …
        # Printed once, as one line (not logged as well): what went wrong, not a traceback.
        _close_bars()
        print(f"error: {redact(str(exc), env_secrets(os.environ))}", file=sys.stderr, flush=True)
        return 1


def _close_bars() -> None:
    """End the progress bars a failed stage left open, so that the error starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _train_all(cfg: PipelineConfig) -> int:
    """`train all`: the progress file gets a done/failed last line; stdout gets the bundle path last.

    Under ``torchrun`` every rank trains its share of the CNN stage; rank 0 alone runs the other stages,
    reports progress and publishes, and the other ranks exit 0 after the CNN stage, printing nothing.
    """
    from train.image.distributed import process_group
    from train.pipeline import build_bundle, train_cnn_share
    from train.progress import ProgressReporter

    with process_group() as dist:
        if not dist.is_main:
            train_cnn_share(cfg, dist)
            return 0
        progress = ProgressReporter(cfg.progress_file)
        try:
            check_weights(cfg)
            check_feature_import(cfg)
            bundle = build_bundle(cfg, progress, dist)
        except BaseException as exc:
            progress.failed(f"{exc.__class__.__name__}: {exc}")
            raise
    from space.bundle import read_manifest

    progress.finished(bundle, str(read_manifest(bundle)["version"]))
    print(bundle, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
