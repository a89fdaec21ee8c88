"""A loaded model bundle (text space, indexes, ONNX session, items) and the holder that swaps bundles.

Loading is blocking and runs off the event loop; the swap itself is one reference assignment on the loop.
Requests pin the model they started on (:meth:`ModelHolder.use`), so a retired model is closed only after
the last request on it has finished.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import onnxruntime as ort

from space import bundle
from space.centering import Centering
from space.errors import NoBundle
from space.hashtags import Hashtagger
from space.query import Query
from space.search import SEARCH_INDEX, load_search_vectors
from space.textspace import TextSpace, unit
from space.vectorindex import build_index, load_index

log = logging.getLogger(__name__)


@dataclass
class Model:
    """Everything one bundle version serves with."""

    version: str
    path: Path
    manifest: dict[str, Any]
    space: TextSpace
    image_vectors: np.ndarray  # (N, D) unit rows
    items: list[dict[str, Any]]
    ids: list[str]  # public image id per key
    by_id: dict[str, int]
    langs: dict[str, np.ndarray]  # language → keys of its items
    images_index: Any
    words_index: Any
    session: Any
    input_name: str
    output_name: str
    hits: list[dict[str, Any]] = field(default_factory=list)  # each image's answer fields
    centering: Centering | None = None  # image search compares centred vectors (space.centering)
    # Text queries are compared with these unit rows: image and caption together (space.search) in a
    # joint-space bundle, else the image vectors themselves.
    search_vectors: np.ndarray | None = None
    search_index: Any = None
    hashtagger: Hashtagger | None = None  # the bundle's hashtag model; None: the nearest words instead
    pool_vectors: np.ndarray | None = None  # unit image vectors of the hashtagger's voting posts
    inflight: int = 0
    retired: bool = field(default=False)
    closed: bool = field(default=False)
    # The same templates as pre-encoded JSON around the score (engine.service): per request only
    # the scores are formatted, which is ~10x cheaper than json.dumps of the answer dicts.
    hit_json: list[tuple[str, str]] = field(init=False, repr=False)
    word_json: list[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.search_vectors is None:
            self.search_vectors, self.search_index = self.image_vectors, self.images_index
        if self.hashtagger is not None and self.pool_vectors is None:
            self.pool_vectors = self.image_vectors[self.hashtagger.pool]
        self.hit_json = [json_around_score(hit) for hit in self.hits]
        self.word_json = [json_around_score({"word": w, "score": 0.0})[0] for w in self.space.words]

    def close(self) -> None:
        """Mark retired and unused (called once no request uses it any more).

        Nothing is torn down by hand: the ONNX session, indexes and arrays are freed with the last
        reference, so a computation still holding this model (a coalesced miss) can never see it half
        closed.
        """
        if not self.closed:
            self.closed = True
            log.info("closed bundle %s", self.version)

    def encode(self, batch: np.ndarray) -> np.ndarray:
        """Run the ONNX image encoder on a (B, 3, 224, 224) batch → (B, D) raw vectors."""
        out = self.session.run([self.output_name], {self.input_name: batch.astype(np.float32)})
        return np.asarray(out[0], dtype=np.float32)

    def image_query(self, raw: np.ndarray) -> np.ndarray:
        """A photo's raw encoder output as a unit query over ``image_vectors`` (centred if the bundle is)."""
        return unit(raw if self.centering is None else self.centering.images(raw))

    def text_query(self, query: Query) -> tuple[np.ndarray, list[str]]:
        """A text query as a unit query over ``image_vectors`` and its unknown words (or ``UnknownWords``)."""
        centre = None if self.centering is None else self.centering.text_mean
        return self.space.embed_query(query, centre, joint=True)


def image_url(image_id: str) -> str:
    """The engine URL of an image file."""
    return "/v1/images/" + quote(image_id, safe="")


def hit_templates(ids: list[str], items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The fixed part of each image's answer (id, caption, url, lang), built once per model."""
    return [
        {"id": pid, "score": 0.0, "caption": item.get("caption", ""), "url": image_url(pid),
         "lang": item.get("lang"), "user": item.get("user"), "post_id": item.get("post_id")}
        for pid, item in zip(ids, items, strict=True)
    ]


def json_around_score(template: dict[str, Any]) -> tuple[str, str]:
    """``json.dumps(template)`` split around its ``score`` value: the text before it and after it."""
    before: list[str] = []
    after: list[str] = []
    part = before
    for name, value in template.items():
        if name == "score":
            part = after
            continue
        part.append(json.dumps(name) + ": " + json.dumps(value, ensure_ascii=False))
    head = "{" + ", ".join(before) + (", " if before else "") + '"score": '
    tail = "".join(", " + x for x in after) + "}"
    return head, tail


def _public_ids(items: list[dict[str, Any]]) -> list[str]:
    """Stable ids (the post id), made unique with a ``~n`` suffix where a post holds several images."""
    seen: dict[str, int] = {}
    ids = []
    for i, item in enumerate(items):
        base = str(item.get("post_id") or i)
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.append(base if n == 0 else f"{base}~{n}")
    return ids


def _index(path: Path, vectors: np.ndarray, name: str, usable: bool = True) -> Any:
    if path.is_file() and not usable:
        log.warning("%s holds other vectors than the ones served (uncentred): rebuilding it in memory", path)
    elif path.is_file():
        index = load_index(path)
        if len(index) == len(vectors):
            return index
        log.warning("%s holds %d vectors, the .npy %d: rebuilding it in memory",
                    path, len(index), len(vectors))
    else:
        log.info("bundle has no %s: building it in memory from %d vectors", name, len(vectors))
    return build_index(vectors, None, threads=1)  # a background load must not starve the workers


def _encoder_session(path: Path, manifest: dict[str, Any], ort_threads: int, encoder: str) -> Any:
    """The ONNX Runtime session of the bundle's fp32 encoder, or of its int8 one when asked and present."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = ort_threads
    options.inter_op_num_threads = 1
    file, disabled = path / bundle.ENCODER, None
    if encoder == "int8":
        int8 = manifest.get("encoder_int8") or {}
        if bundle.INT8_ENCODER in manifest.get("files", {}) and int8.get("published"):
            # ORT would otherwise move the int8 conversions above the float max-pools (slower).
            file, disabled = path / bundle.INT8_ENCODER, list(int8.get("disabled_optimizers", [])) or None
            log.info("bundle %s: serving its int8 encoder", path.name)
        else:
            log.warning("bundle %s has no int8 encoder (%s): serving the fp32 one", path.name,
                        int8.get("reason", "older bundle"))
    return ort.InferenceSession(str(file), sess_options=options, providers=["CPUExecutionProvider"],
                                disabled_optimizers=disabled)


def load_model(path: Path, ort_threads: int = 1, encoder: str = "fp32") -> Model:
    """Verify (sha256 of every file) and load the bundle at ``path``; raises ``BundleInvalid``."""
    started = time.perf_counter()
    manifest = bundle.verify(path)
    space = TextSpace.load(path)
    space.speller.prepare()
    centering = Centering.load(path)
    raw = np.load(path / bundle.IMAGE_VECTORS)
    if centering is not None and centering.image_mean.shape != (raw.shape[1],):
        raise bundle.BundleInvalid(f"{path.name}: centering.npz does not match the {raw.shape[1]}-d vectors.")
    vectors = unit(raw if centering is None else centering.images(raw))
    meta = json.loads((path / bundle.IMAGE_META).read_text(encoding="utf-8"))
    items = list(meta["items"])
    if len(items) != len(vectors):
        raise bundle.BundleInvalid(f"{path.name}: {len(items)} items for {len(vectors)} image vectors.")
    ids = _public_ids(items)
    langs_list: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        if item.get("lang"):
            langs_list.setdefault(str(item["lang"]), []).append(i)
    session = _encoder_session(path, manifest, ort_threads, encoder)
    search = load_search_vectors(path, raw)
    model = Model(
        version=str(manifest["version"]),
        path=path,
        manifest=manifest,
        space=space,
        image_vectors=vectors,
        items=items,
        ids=ids,
        by_id={pid: i for i, pid in enumerate(ids)},
        hits=hit_templates(ids, items),
        langs={k: np.array(v, dtype=np.int64) for k, v in langs_list.items()},
        images_index=_index(path / bundle.IMAGE_INDEX, vectors, bundle.IMAGE_INDEX,
                            usable=centering is None or bool(manifest.get("image_index_centred"))),
        centering=centering,
        words_index=_index(path / bundle.WORD_INDEX, space.vectors, bundle.WORD_INDEX),
        session=session,
        input_name=session.get_inputs()[0].name,
        output_name=session.get_outputs()[0].name,
        search_vectors=search,
        search_index=None if search is None else _index(path / SEARCH_INDEX, search, SEARCH_INDEX),
        hashtagger=Hashtagger.load(path),
    )
    log.info(
        "loaded bundle %s (%d images, %d words) in %.2f s",
        model.version, len(items), len(space.words), time.perf_counter() - started,
    )
    return model


class ModelHolder:
    """The current model, swapped atomically; tracks in-flight use so old models close safely."""

    def __init__(self) -> None:
        self.current: Model | None = None
        self.last_error: str | None = None

    def require(self) -> Model:
        """The current model, or :class:`NoBundle` (503)."""
        if self.current is None:
            raise NoBundle("No valid model bundle is loaded yet; the service is degraded.")
        return self.current

    @contextmanager
    def use(self) -> Iterator[Model]:
        """Pin the current model for the duration of one request."""
        model = self.require()
        model.inflight += 1
        try:
            yield model
        finally:
            model.inflight -= 1
            if model.retired and model.inflight == 0:
                model.close()

    def swap(self, new: Model) -> Model | None:
        """Make ``new`` current; retire the old one (closed now or when its last request ends)."""
        old, self.current = self.current, new
        if old is not None and old is not new:
            old.retired = True
            if old.inflight == 0:
                old.close()
        return old
