"""Frozen configuration of the trainer's text-side stages and of the whole `train all` run.

Built once in ``train.__main__.main()`` and passed down; every stage's output is keyed by a hash of
its inputs and its config (:func:`config_hash`), so a changed setting re-runs exactly what it affects.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from train.corpus.topic import Topic
from train.image.features import DEFAULT_LEVELS, POOL5
from train.recipes.joint.hashtags import HashtagConfig
from train.recipes.joint.model import JointConfig
from train.recipes.seed.config import ImageConfig

# The joint recipe's image views for its features, unless --quick (one view) or a flag says otherwise: the
# whole photo and its mirror (docs/benchmarks.md, "Image framing"). train.image.encode_dist writes the same.
JOINT_CROPS = 2
JOINT_FRAMING = "whole"

CorpusFormat = Literal["flickr8k", "instaloader", "jsonl"]
# "joint": images and words learned into one space (train.recipes.joint.model, the default); "seed":
# the original system's GoogLeNet regression onto fixed Word2Vec caption vectors
# (train.recipes.seed.training).
RECIPES: tuple[str, ...] = ("joint", "seed")
FORMATS: tuple[str, ...] = ("flickr8k", "instaloader", "jsonl")


@dataclass(frozen=True)
class IngestConfig:
    """How to read a corpus."""

    corpus: Path
    format: CorpusFormat
    limit: int | None = None  # read at most this many posts (tests, dry runs)


@dataclass(frozen=True)
class FilterConfig:
    """The filters, in the order they run; each can be switched off."""

    drop_no_caption: bool = True
    min_words: int = 3  # 0 switches the short-caption filter off
    languages: tuple[str, ...] = ("en", "es", "ca")  # empty switches language detection off
    # Keep a caption when an allowed language has at least this probability, not only when it is the
    # top guess: short English captions often come out as "da"/"af" first with "en" close behind.
    language_min_prob: float = 0.2
    max_posts_per_user: int | None = 20
    # Posts naming one of these are dropped; a topic file (train.corpus.topic) lists them, less the topic's
    # own names. Empty (no topic file): nothing is dropped as another city, and the report says so.
    other_cities: tuple[str, ...] = ()
    drop_duplicates: bool = True
    check_images: bool = True


@dataclass(frozen=True)
class SplitConfig:
    """80/5/15 by a hash of the post id, unless the corpus gives every post a split."""

    train: float = 0.80
    val: float = 0.05
    use_corpus_split: bool = True
    salt: str = "topicspace"


@dataclass(frozen=True)
class TextConfig:
    """Word2Vec and TF-IDF settings (the original system's: 300-d, window 8, 50 epochs, min_count 5)."""

    vector_size: int = 300
    window: int = 8
    epochs: int = 50
    min_count: int = 5
    sg: int = 0  # CBOW, gensim's default
    negative: int = 5
    # One thread: the same corpus and settings then give the same word vectors, bit for bit, and the same
    # retrieval figures (the joint space on top differs only in float rounding). With more threads the
    # order of their updates varies run to run, and retrieval figures by about a point. Costs 8 s on
    # Flickr8k's 300-d run; raise it for big corpora.
    workers: int = 1
    seed: int = 0
    # Each reference caption its own sentence (Flickr8k: five per image) rather than the joined text.
    sentences_from_captions: bool = True
    max_vocab: int | None = None

    @classmethod
    def quick(cls) -> TextConfig:
        """A small, fast preset for tests and `--quick` runs."""
        return cls(vector_size=64, window=8, epochs=15, min_count=3)


@dataclass(frozen=True)
class PipelineConfig:
    """Everything `train all` needs; stage configs included."""

    ingest: IngestConfig
    models: Path
    weights: Path | None = None
    work: Path | None = None
    quick: bool = False
    filters: FilterConfig = field(default_factory=FilterConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    text: TextConfig = field(default_factory=TextConfig)
    progress_file: Path | None = None
    recipe: str = "joint"
    # The joint recipe's settings: the joint space, the hashtag head, the frozen CNN.
    joint: JointConfig = field(default_factory=JointConfig)
    hashtags: HashtagConfig = field(default_factory=HashtagConfig)
    backbone: str = "bvlc"  # or "torchvision" (torchvision's ImageNet GoogLeNet, downloaded on first use)
    # Whose global means make an image's features (train.image.levels), in network order. None: pool4, 5a
    # and 5b on the BVLC network (2,688 features, the default recipe), 5b alone on torchvision's (1,024).
    image_levels: tuple[str, ...] | None = None
    # The seed recipe's image stage; None: its default, or its quick preset under ``quick``.
    image: ImageConfig | None = None
    activate: bool = True
    encode_batch_size: int = 32
    # How a photo is framed for the network (space.images.FRAMINGS): "whole" (all of it at 224 × 224) or
    # "centre" (crops of the short-side-256 image). None: whole for the joint recipe (the whole photo and
    # its mirror score as the mean of 10 centre crops, or better, for a fifth of the work:
    # docs/benchmarks.md, "Image framing"), centre for the seed recipe. Photos sent to the engine are
    # framed as the bundle says, one view.
    encode_framing: str | None = None
    # Views averaged per bundle image: 1 or 2 (the framed view; + its mirror), or with the centre framing
    # 10 (+ four corners, each mirrored); photos sent to the engine use one. None: 2 for the joint recipe,
    # 1 under --quick and for the seed recipe.
    encode_crops: int | None = None
    # Also publish a static int8 copy of the encoder (train.image.quantize), kept only when its mean cosine
    # to the fp32 outputs on held-out images is >= 0.99; engines serve it with ENGINE_ENCODER=int8
    # (1.4x faster).
    encoder_int8: bool = True
    # Scalar kind of the bundle's usearch indexes (space.vectorindex.DTYPES): f16 halves the file and the
    # memory it maps at no measurable recall cost and searches ~1.4x faster than f32; i8 quarters it but
    # loses recall on dense clusters.
    index_dtype: str = "f16"
    # Features computed elsewhere (--features DIR: keys.txt, features.npy, meta.json), imported into the
    # feature store before encoding; photos without a row there are encoded as usual.
    features_import: Path | None = None
    # Photos per feature-store part: a killed run loses at most one part (or 30 s) of encoding.
    feature_part_rows: int = 4096
    # Where the image side runs: "auto" (a CUDA GPU when torch sees one, else the CPU), "cpu" or "cuda";
    # and which runtime encodes the features ("auto": torch on a GPU, ONNX Runtime on the CPU; "onnx";
    # "torch"). Neither is part of a stage key.
    device: str = "auto"
    encode_runtime: str = "auto"
    # What the corpus is about (--topic FILE): its other cities are in ``filters``, its attractions go to the
    # report, and the manifest records it. None: no topic file.
    topic: Topic | None = None

    @property
    def crops(self) -> int:
        """Views averaged per bundle image (:attr:`encode_crops`, else 2 for the joint recipe, 1 under
        ``quick`` or for the seed recipe)."""
        if self.encode_crops is not None:
            return self.encode_crops
        return JOINT_CROPS if self.recipe == "joint" and not self.quick else 1

    @property
    def framing(self) -> str:
        """How photos are framed for the network (:attr:`encode_framing` or the recipe's default)."""
        if self.encode_framing is not None:
            return self.encode_framing
        return JOINT_FRAMING if self.recipe == "joint" else "centre"

    @property
    def levels(self) -> tuple[str, ...]:
        """The feature levels of the joint recipe (:attr:`image_levels` or the backbone's default)."""
        if self.image_levels is not None:
            return self.image_levels
        return DEFAULT_LEVELS if self.backbone == "bvlc" else POOL5

    @property
    def cnn_backbone(self) -> str:
        """The backbone the recipe's CNN starts from."""
        if self.recipe == "seed":
            return self.image.backbone if self.image is not None else ImageConfig().backbone
        return self.backbone

    @property
    def work_dir(self) -> Path:
        """Where stage outputs are cached: ``<models>/.work/<corpus-hash>`` unless given."""
        if self.work is not None:
            return self.work
        key = config_hash({"corpus": str(self.ingest.corpus.resolve()), "format": self.ingest.format})
        return self.models / ".work" / key


def to_jsonable(obj: Any) -> Any:
    """A dataclass (or anything nested in one) as plain JSON types; paths become strings."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    return obj


def config_hash(*parts: Any, length: int = 16) -> str:
    """A short stable hash of configs and input fingerprints (the stage cache key)."""
    blob = json.dumps([to_jsonable(p) for p in parts], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]
