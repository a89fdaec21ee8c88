"""The seed recipe's image side: fine-tune GoogLeNet onto the caption vectors, export, encode every image.

Stages (each cached): ``image`` (:func:`train.recipes.seed.training.train_regressor`; under torchrun every
rank trains its share of each batch), ``export`` (ONNX, parity-checked), ``quantize`` (the int8 copy) and
``encode`` (every kept image through the exported encoder, resumable).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from space import bundle as bundle_format
from space.errors import SpaceError
from train.assemble import ImageSide, Kept, RecipeBuild, TextSide, centering_for
from train.config import to_jsonable
from train.corpus.posts import EmptyCorpus
from train.image.encode import encode_images
from train.recipes.int8 import quantize_stage
from train.recipes.seed.config import ImageConfig
from train.stages import Stage, StageRunner
from train.text.word2vec import TextResult

PARITY_IMAGES = 8


class MissingStage(SpaceError):
    """A stage cannot run: an input it needs was not given (the image stage's GoogLeNet weights)."""

    code = "missing_stage"
    status = 500


class SeedRecipe:
    """The seed recipe's stages, run by a :class:`~train.stages.StageRunner`."""

    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner
        self.cfg = runner.cfg

    def image_config(self) -> ImageConfig:
        """The image stage's config (quick preset under ``--quick``)."""
        if self.cfg.image is not None:
            return self.cfg.image
        return ImageConfig.quick_preset() if self.cfg.quick else ImageConfig()

    def build(self, side: TextSide) -> RecipeBuild:
        """Train the regressor, export it (and its int8 copy), encode every text-side post."""
        image_cfg = self.image_config()
        image_st, checkpoint = self.image(side.stage, side.text, image_cfg)
        export_st, onnx_path, parity = self.export(image_st, checkpoint, side.text)
        int8_path, int8_report = quantize_stage(self.runner, export_st, onnx_path, side.text.posts)
        config = {"recipe": "seed", **to_jsonable(image_cfg)}
        image_side = ImageSide(config, onnx_path, parity, int8_path, int8_report)
        kept = self.encode_kept(export_st, image_side, side.text)
        return RecipeBuild(image_side, kept, side.text.space, None, centering_for(image_cfg.centre, kept))

    def train_share(self, side: TextSide) -> Path:
        """A torchrun rank other than 0: its share of the regressor's training (rank 0 does the rest)."""
        return self.image(side.stage, side.text, self.image_config())[1]

    def image(self, prev: Stage, text: TextResult, image_cfg: ImageConfig) -> tuple[Stage, Path]:
        """Train the GoogLeNet regressor onto the caption vectors (cached)."""
        weights = self.cfg.weights
        st = self.runner.stage("image", prev.key, to_jsonable(image_cfg), str(weights))

        def run() -> dict[str, Any]:
            if weights is None and image_cfg.backbone == "bvlc":  # torchvision's downloads its own
                raise MissingStage("the image stage needs --weights (the BVLC GoogLeNet folder)")
            from train.recipes.seed.training import train_regressor

            ckpt = train_regressor(
                image_cfg,
                [p.image for p in text.posts],
                text.vectors,
                [str(p.split) for p in text.posts],
                weights,
                st.dir,
                progress=self.runner.progress.callback,
                # Trunk activations depend on the images and views only: share them across image configs.
                cache_dir=self.runner.work / "trunk-cache",
            )
            return {"checkpoint": str(ckpt)}

        info = self.runner.run_stage(st, run)
        return st, Path(info["checkpoint"])

    def export(self, prev: Stage, checkpoint: Path, text: TextResult) -> tuple[Stage, Path, dict[str, Any]]:
        """Export the checkpoint to ONNX with a parity check on a few real images (cached)."""
        st = self.runner.stage("export", prev.key)
        onnx_path = st.dir / bundle_format.ENCODER

        def run() -> dict[str, Any]:
            from train.image.export import export_onnx

            check = [p.image for p in text.posts[:PARITY_IMAGES]]
            return {"parity": export_onnx(checkpoint, onnx_path, check)}

        info = self.runner.run_stage(st, run)
        return st, onnx_path, info["parity"]

    def encode(self, prev: Stage, onnx_path: Path, text: TextResult) -> tuple[np.ndarray, list[int]]:
        """Every kept image through the exported encoder (cached)."""
        crops, framing = self.cfg.crops, self.cfg.framing
        # With one centre crop the key leaves both out, so encodings cached before the options existed stay
        # valid.
        st = self.runner.stage("encode", prev.key, self.cfg.encode_batch_size,
                               *([crops] if crops != 1 else []), *([framing] if framing != "centre" else []))

        def run() -> dict[str, Any]:
            vectors, failed = encode_images(
                onnx_path,
                [p.image for p in text.posts],
                self.cfg.encode_batch_size,
                progress=self.runner.progress.callback,
                work_dir=st.dir / "chunks",  # a killed run resumes from its last finished chunk
                crops=crops,
                framing=framing,
            )
            np.save(st.dir / bundle_format.IMAGE_VECTORS, np.asarray(vectors, dtype=np.float32))
            shutil.rmtree(st.dir / "chunks", ignore_errors=True)  # images.npy holds them all
            return {"failed": [int(i) for i in failed]}

        info = self.runner.run_stage(st, run)
        return np.load(st.dir / bundle_format.IMAGE_VECTORS), list(info["failed"])

    def encode_kept(self, export_st: Stage, image_side: ImageSide, text: TextResult) -> Kept:
        """Encode every text-side post; those whose image fails to encode leave the bundle."""
        vectors, failed = self.encode(export_st, image_side.onnx, text)
        failed_set = set(failed)
        rows = [i for i in range(len(text.posts)) if i not in failed_set]
        if not rows:
            raise EmptyCorpus("No kept image could be encoded: nothing to publish.")
        return Kept([text.posts[i] for i in rows], vectors[rows], text.vectors[rows], failed)
