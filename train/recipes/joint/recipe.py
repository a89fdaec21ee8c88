"""The default recipe's image side: frozen GoogLeNet features → joint space → encoder, vectors, hashtags.

Stages (each cached like every other): ``features`` (every kept image's pooled GoogLeNet features, the
mean of ``crops`` views, through ONNX Runtime, resumable), ``joint`` (:mod:`.model`), ``export``
(GoogLeNet + the learned linear map as one ONNX encoder, parity-checked against torch), ``quantize``
(the int8 copy), ``hashtags`` (:mod:`.hashtags`). Because the CNN is frozen, the bundle's
image vectors are the cached features through the learned map: no second pass over the images.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from space import bundle as bundle_format
from space.hashtags import Hashtagger
from space.textspace import TextSpace
from space.tokenize import tokenize
from train.assemble import ImageSide, Kept, RecipeBuild, TextSide
from train.config import config_hash, to_jsonable
from train.corpus.posts import EmptyCorpus, Post
from train.image.encode import encode_images
from train.recipes.int8 import quantize_stage
from train.recipes.joint.hashtags import train_hashtags
from train.recipes.joint.model import JOINT_FILE, JointModel, train_joint
from train.stages import Stage, StageRunner

log = logging.getLogger(__name__)

FEATURES_FILE = "features.npy"
PARITY_IMAGES = 8


def caption_vectors(space: TextSpace, posts: Sequence[Post]) -> np.ndarray:
    """Each post's own caption as a joint-space query would be embedded (zeros when no word is known)."""
    out = np.zeros((len(posts), space.matrix(joint=True).shape[1]), np.float32)
    for i, post in enumerate(posts):
        vec, _ = space.embed_tokens(tokenize(post.caption, language=post.lang), joint=True)
        if vec is not None:
            out[i] = vec
    return out


class JointRecipe:
    """The joint recipe's stages, run by a :class:`~train.stages.StageRunner`."""

    def __init__(self, runner: StageRunner) -> None:
        self.runner = runner
        self.cfg = runner.cfg

    def build(self, side: TextSide) -> RecipeBuild:
        """Features, joint space, encoder (+ int8), image vectors and hashtags of the text side's posts."""
        text = side.text
        feat_st, features, failed = self.features(text.posts)
        joint_st, model = self.joint(side.stage, feat_st, text.posts, text.space, features, failed)
        export_st, onnx_path, parity = self.export(joint_st, model, text.posts)
        int8_path, int8_report = quantize_stage(self.runner, export_st, onnx_path, text.posts)
        failed_set = set(failed)
        rows = [i for i in range(len(text.posts)) if i not in failed_set]
        if not rows:
            raise EmptyCorpus("No kept image could be encoded: nothing to publish.")
        posts = [text.posts[i] for i in rows]
        base = text.space
        space = TextSpace(base.words, base.vectors, base.idf, base.counts, model.words)
        vectors = model.images(features[rows])
        captions = caption_vectors(space, posts)
        kept = Kept(posts, vectors, captions, list(failed))
        hashtags = self.hashtags(export_st, vectors, posts, space)
        config = {"recipe": "joint", "joint": to_jsonable(self.cfg.joint), "backbone": self.cfg.backbone,
                  "crops": self.cfg.crops, "history": model.history}
        image_side = ImageSide(config, onnx_path, parity, int8_path, int8_report)
        # No centring: the joint space is trained on normalised vectors, and centring measured no gain.
        return RecipeBuild(image_side, kept, space, hashtags, None)

    def features(self, posts: Sequence[Post]) -> tuple[Stage, np.ndarray, list[int]]:
        """Pooled frozen-GoogLeNet features of every post's image (cached, resumable)."""
        weights = self.cfg.weights
        from train.image.googlenet import weights_fingerprint

        fingerprint = weights_fingerprint(weights) if weights is not None else "none"
        # Keyed by the images alone (not the text stages): a changed text setting reuses the features.
        images = config_hash([str(p.image) for p in posts])
        st = self.runner.stage("features", images, self.cfg.backbone, fingerprint, self.cfg.crops)

        def run() -> dict[str, Any]:
            from train.image.export import export_features

            onnx_path = st.dir / "features.onnx"
            export_features(self.cfg.backbone, weights, onnx_path, [p.image for p in posts[:PARITY_IMAGES]])
            feats, failed = encode_images(onnx_path, [p.image for p in posts], self.cfg.encode_batch_size,
                                          progress=self.runner.progress.callback, work_dir=st.dir / "chunks",
                                          crops=self.cfg.crops)
            np.save(st.dir / FEATURES_FILE, np.asarray(feats, dtype=np.float32))
            shutil.rmtree(st.dir / "chunks", ignore_errors=True)
            return {"failed": [int(i) for i in failed]}

        info = self.runner.run_stage(st, run)
        return st, np.load(st.dir / FEATURES_FILE), list(info["failed"])

    def joint(self, text_st: Stage, feat_st: Stage, posts: Sequence[Post], space: TextSpace,
              features: np.ndarray, failed: Sequence[int]) -> tuple[Stage, JointModel]:
        """Learn the joint space (cached)."""
        st = self.runner.stage("joint", text_st.key, feat_st.key, to_jsonable(self.cfg.joint))

        def run() -> dict[str, Any]:
            usable = np.ones(len(posts), bool)
            usable[list(failed)] = False
            model = train_joint(self.cfg.joint, features, posts, space, usable, self.runner.progress.callback)
            model.save(st.dir / JOINT_FILE)
            return {"history": model.history}

        self.runner.run_stage(st, run)
        return st, JointModel.load(st.dir / JOINT_FILE)

    def export(self, prev: Stage, model: JointModel,
               posts: Sequence[Post]) -> tuple[Stage, Path, dict[str, Any]]:
        """GoogLeNet + the learned map as one ONNX encoder, parity-checked (cached)."""
        st = self.runner.stage("export", prev.key)
        onnx_path = st.dir / bundle_format.ENCODER

        def run() -> dict[str, Any]:
            from train.image.export import export_joint

            check = [p.image for p in posts[:PARITY_IMAGES]]
            return {"parity": export_joint(self.cfg.backbone, self.cfg.weights, model, onnx_path, check)}

        info = self.runner.run_stage(st, run)
        return st, onnx_path, info["parity"]

    def hashtags(self, prev: Stage, vectors: np.ndarray, posts: Sequence[Post],
                 space: TextSpace) -> Hashtagger:
        """The word head and the neighbour votes (cached)."""
        st = self.runner.stage("hashtags", prev.key, to_jsonable(self.cfg.hashtags), len(posts))

        def run() -> dict[str, Any]:
            tagger = train_hashtags(self.cfg.hashtags, vectors, posts, space)
            tagger.save(st.dir)
            return {"candidates": len(tagger.rows)}

        self.runner.run_stage(st, run)
        tagger = Hashtagger.load(st.dir)
        assert tagger is not None
        return tagger
