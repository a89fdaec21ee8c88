"""Builds the small real bundle the engine and bot tests serve.

INTERIM: until `train.pipeline` lands, this writes a bundle of the right shape from real Flickr8k
captions (real gensim Word2Vec, real TF-IDF) with a tiny real ONNX encoder (global average pool + a
fixed linear map) and the caption vectors as image vectors. Replace with the trainer's quick mode.
"""

from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from space import bundle
from space.textspace import TextSpace
from space.tokenize import tokenize

N_IMAGES = 300


def _read_flickr(flickr8k: Path, n: int) -> list[tuple[str, list[str], str]]:
    captions: dict[str, list[str]] = defaultdict(list)
    for line in (flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        captions[name.split("#")[0]].append(text.strip())
    train = (flickr8k / "Flickr_8k.trainImages.txt").read_text().split()[: n * 2 // 3]
    test = (flickr8k / "Flickr_8k.testImages.txt").read_text().split()[: n - len(train)]
    return [(f, captions[f], s) for names, s in ((train, "train"), (test, "test")) for f in names]


def _tiny_encoder(path: Path, dim: int) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.01, size=(3, dim)).astype(np.float32)
    nodes = [
        helper.make_node("GlobalAveragePool", ["images"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["vectors"]),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("vectors", TensorProto.FLOAT, ["batch", dim])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def build_small_bundle(models: Path, flickr8k: Path, weights: Path, n: int = N_IMAGES) -> Path:
    from gensim.models import Word2Vec

    posts = _read_flickr(flickr8k, n)
    docs = [tokenize(" ".join(caps)) for _, caps, _ in posts]
    sentences = [tokenize(c) for _, caps, _ in posts for c in caps]
    w2v = Word2Vec(sentences, vector_size=64, window=8, min_count=3, epochs=30, workers=1, seed=1)
    words = list(w2v.wv.index_to_key)
    df = Counter(w for d in docs for w in set(d))
    idf = np.array([math.log2(len(docs) / df[w]) if df[w] else 0.0 for w in words], dtype=np.float32)
    counts = np.array([w2v.wv.get_vecattr(w, "count") for w in words])
    space = TextSpace(words, w2v.wv.vectors.copy(), idf, counts)
    vectors = np.stack([space.embed_tokens(d)[0] for d in docs]).astype(np.float32)
    with bundle.staging(models) as tmp:
        space.save(tmp)
        np.save(tmp / bundle.IMAGE_VECTORS, vectors)
        items = [
            {"key": i, "post_id": f, "path": str(flickr8k / "images" / f), "caption": caps[0],
             "captions": caps, "split": split, "lang": "en", "user": None}
            for i, (f, caps, split) in enumerate(posts)
        ]
        (tmp / bundle.IMAGE_META).write_text(
            json.dumps({"corpus_root": str(flickr8k), "items": items}), encoding="utf-8"
        )
        _tiny_encoder(tmp / bundle.ENCODER, space.dim)
        (tmp / bundle.REPORT_DIR).mkdir()
        stats = {"n_images": len(items), "n_words": len(words), "languages": {"en": len(items)}}
        (tmp / bundle.REPORT_DIR / "stats.json").write_text(json.dumps(stats), encoding="utf-8")
        report = {"total": len(items), "kept": len(items), "dropped": {}, "languages": {"en": len(items)}}
        return bundle.publish(tmp, models, {"config": {"interim": True}, "filter_report": report})
