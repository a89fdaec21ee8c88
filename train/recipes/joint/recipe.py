"""The default recipe's image side: frozen GoogLeNet features → joint space → encoder, vectors, hashtags.

Stages (each cached like every other): ``features`` (every kept image's pooled GoogLeNet features — the
means of inception pool4, 5a and 5b by default (:mod:`train.image.levels`), of 5b alone with
``--image-levels 5b`` — the mean of ``crops`` views, through ONNX Runtime, resumable), ``joint``
(:mod:`.model`), ``export`` (GoogLeNet + the learned linear map as one ONNX encoder, parity-checked
against torch), ``quantize`` (the int8 copy), ``hashtags`` (:mod:`.hashtags`). Because the CNN is
frozen, the bundle's image vectors are the cached features through the learned map: no second pass over
the images.
"""

from __future__ import annotations

import json
import logging
import os
import time
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
from train.image.distributed import broadcast_object
from train.image.encode import EncodeConfig
from train.image.features import BACKBONES, POOL5, FeatureSpec, FeatureStore, encode_missing, missing
from train.image.photokeys import digest_of, photo_keys
from train.image.runtime import pick_runtime
from train.recipes.int8 import quantize_stage
from train.recipes.joint.hashtags import train_hashtags
from train.recipes.joint.model import JOINT_FILE, JointModel, train_joint
from train.stages import Stage, StageRunner

log = logging.getLogger(__name__)

FEATURES_FILE = "features.npy"
STORE_DIR = "feature-store"  # under the work dir: train.image.features
HASH_CACHE = "photo-sha256.sqlite"  # under the work dir: train.image.photokeys
CHECKPOINT_FILE = "checkpoint.pt"  # the joint stage's state after its last finished epoch
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
                  "crops": self.cfg.crops, "framing": self.cfg.framing, "levels": list(self.cfg.levels),
                  "history": model.history}
        image_side = ImageSide(config, onnx_path, parity, int8_path, int8_report)
        # No centring: the joint space is trained on normalised vectors, and centring measured no gain.
        return RecipeBuild(image_side, kept, space, hashtags, None)

    # -- features: the per-photo store (train.image.features), shared by torchrun ranks --------------------
    def feature_spec(self) -> FeatureSpec:
        """The encoder setting the features depend on: backbone, weights fingerprint, crops, levels."""
        weights = self.cfg.weights
        if weights is not None and (weights / "SHA256SUMS").is_file():
            from train.image.googlenet import weights_fingerprint

            fingerprint = weights_fingerprint(weights)
        else:
            fingerprint = "none"
        backbone = BACKBONES.get(self.cfg.backbone, self.cfg.backbone)
        return FeatureSpec.of(backbone, fingerprint, self.cfg.crops, self.cfg.levels, self.cfg.framing)

    def features(self, posts: Sequence[Post]) -> tuple[Stage, np.ndarray, list[int]]:
        """Pooled frozen-GoogLeNet features of every post's photo (rank 0; the others run
        :meth:`features_share`): photos the store holds are read, only the others encoded."""
        st, keys, _ = self._features_stage(posts)

        def run() -> dict[str, Any]:
            stats = self._encode_share(posts, keys)
            store = FeatureStore(self.runner.work / STORE_DIR, self.feature_spec())
            _, failed = store.gather(keys, st.dir / FEATURES_FILE)
            log.info("features: %d photos, %d unreadable", len(keys), len(failed))
            return {"failed": failed, **stats}

        info = self.runner.run_stage(st, run)
        return st, np.load(st.dir / FEATURES_FILE), list(info["failed"])

    def features_share(self, posts: Sequence[Post]) -> None:
        """A torchrun rank other than 0: its share of the photos the store lacks (rank 0 merges)."""
        _, keys, done = self._features_stage(posts)
        if not done:
            self._encode_share(posts, keys)

    def _features_stage(self, posts: Sequence[Post]) -> tuple[Stage, np.ndarray, bool]:
        """The photos' keys (hashed on rank 0, shared), the stage they key, and whether it is done."""
        dist = self.runner.dist
        main = dist is None or dist.is_main
        keys = None
        if main:
            keys = photo_keys([p.image for p in posts], self.runner.work / HASH_CACHE,
                              progress=self.runner.progress.callback)
        keys = broadcast_object(keys, dist)
        assert keys is not None
        # Keyed by the photos' content and the encoder setting, not the text stages or paths.
        st = self.runner.stage("features", digest_of(keys), self.feature_spec().fields())
        done = bool(broadcast_object(st.done if main else False, dist))
        return st, keys, done

    def features_onnx(self, posts: Sequence[Post]) -> Path:
        """The frozen backbone's features as an ONNX graph: a cached stage of its own (one export per
        backbone and weights, whatever the photos)."""
        spec = self.feature_spec()
        levels = () if spec.levels == POOL5 else (list(spec.levels),)  # 5b alone: the key it always had
        st = self.runner.stage("features-onnx", spec.backbone, spec.weights, *levels)
        onnx_path = st.dir / "features.onnx"

        def run() -> dict[str, Any]:
            from train.image.export import export_features

            check = [p.image for p in posts[:PARITY_IMAGES]]
            return {"parity": export_features(self.cfg.backbone, self.cfg.weights, onnx_path, check,
                                              spec.levels)}

        self.runner.run_stage(st, run)
        return onnx_path

    def _encode_share(self, posts: Sequence[Post], keys: np.ndarray) -> dict[str, int]:
        """Encode this rank's share of the photos the store lacks (all of them in one process)."""
        from train.image.distributed import DistContext, barrier

        dist = self.runner.dist or DistContext()
        spec = self.feature_spec()
        store = FeatureStore(self.runner.work / STORE_DIR, spec)
        ecfg = self._encode_config(dist)
        runtime = pick_runtime(ecfg.runtime, ecfg.device)
        onnx_path: Path | None = None
        imported = 0
        if dist.is_main:
            if self.cfg.features_import is not None:
                imported = store.import_folder(self.cfg.features_import, keys)
            imported += self._adopt_chunked_features(store, posts, keys)
            if runtime == "onnx" and len(missing(store.index(), keys).positions) > 0:
                onnx_path = self.features_onnx(posts)
        onnx_path = broadcast_object(onnx_path, dist)
        barrier(dist)  # the import's part and the export are in place before anyone reads the store

        def module() -> Any:
            from train.image.export import features_module

            return features_module(self.cfg.backbone, self.cfg.weights, spec.levels)

        todo = encode_missing(store, [p.image for p in posts], keys, ecfg, rank=dist.rank,
                              world=dist.world_size, onnx_path=onnx_path, module=module,
                              progress=self.runner.progress.callback if dist.is_main else None,
                              flush_rows=self.cfg.feature_part_rows,
                              note=f" ({imported} imported)" if imported else "")
        barrier(dist)  # every rank's parts are in the store before rank 0 gathers them
        return {"photos": len(keys), "already": todo.already, "imported": imported,
                "encoded": len(todo.positions)}

    def _adopt_chunked_features(self, store: FeatureStore, posts: Sequence[Post], keys: np.ndarray) -> int:
        """Features a finished stage of the earlier layout (one ``features.npy`` keyed by the image paths)
        holds for exactly these photos, moved into the store once, so a work folder from before the store
        is not encoded again."""
        spec = self.feature_spec()
        if spec.framing != "centre":  # that layout only ever held centre-framed crops
            return 0
        paths = config_hash([str(p.image) for p in posts])
        key = config_hash("features", paths, self.cfg.backbone, spec.weights, spec.crops)  # that layout's
        old = self.runner.work / f"features-{key}"
        if not (old / "DONE.json").is_file() or not (old / FEATURES_FILE).is_file():
            return 0
        failed = set(json.loads((old / "DONE.json").read_text(encoding="utf-8")).get("failed", []))
        matrix = np.load(old / FEATURES_FILE, mmap_mode="r")
        if matrix.shape != (len(posts), spec.dim):
            return 0
        have = store.index()
        rows = [i for i in range(len(posts)) if i not in failed and bytes(keys[i]) not in have]
        with store.writer(f"adopted-{os.getpid()}-{time.time_ns()}", flush_rows=65536,
                          flush_seconds=float("inf")) as w:
            for i in rows:
                w.add(bytes(keys[i]), matrix[i])
        if rows:
            log.info("features: moved %d photos' features from %s into the store", len(rows), old)
        return len(rows)

    def _encode_config(self, dist: Any) -> EncodeConfig:
        """This rank's encoder settings: its share of the cores, its GPU."""
        from train.image.runtime import cuda_available

        gpus = 0
        if cuda_available():
            import torch

            gpus = torch.cuda.device_count()
        share = dist.cpu_threads() if dist.enabled else None
        return EncodeConfig(batch_size=self.cfg.encode_batch_size, threads=share, decode_workers=share,
                            device=self.cfg.device, device_id=dist.local_rank % gpus if gpus else 0,
                            crops=self.cfg.crops, framing=self.cfg.framing, runtime=self.cfg.encode_runtime)

    def joint(self, text_st: Stage, feat_st: Stage, posts: Sequence[Post], space: TextSpace,
              features: np.ndarray, failed: Sequence[int]) -> tuple[Stage, JointModel]:
        """Learn the joint space (cached)."""
        st = self.runner.stage("joint", text_st.key, feat_st.key, to_jsonable(self.cfg.joint))

        def run() -> dict[str, Any]:
            usable = np.ones(len(posts), bool)
            usable[list(failed)] = False
            checkpoint = st.dir / CHECKPOINT_FILE  # a killed run resumes after its last finished epoch
            model = train_joint(self.cfg.joint, features, posts, space, usable, self.runner.progress.callback,
                                device=self.cfg.device, checkpoint=checkpoint)
            model.save(st.dir / JOINT_FILE)
            checkpoint.unlink(missing_ok=True)
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
            return {"parity": export_joint(self.cfg.backbone, self.cfg.weights, model, onnx_path, check,
                                           self.cfg.levels)}

        info = self.runner.run_stage(st, run)
        return st, onnx_path, info["parity"]

    def hashtags(self, prev: Stage, vectors: np.ndarray, posts: Sequence[Post],
                 space: TextSpace) -> Hashtagger:
        """The word head and the neighbour votes (cached)."""
        st = self.runner.stage("hashtags", prev.key, to_jsonable(self.cfg.hashtags), len(posts))

        def run() -> dict[str, Any]:
            tagger = train_hashtags(self.cfg.hashtags, vectors, posts, space, self.cfg.device,
                                    self.runner.progress.callback)
            tagger.save(st.dir)
            return {"candidates": len(tagger.rows)}

        self.runner.run_stage(st, run)
        tagger = Hashtagger.load(st.dir)
        assert tagger is not None
        return tagger
