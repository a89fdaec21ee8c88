"""A loaded model bundle (text space, indexes, ONNX session, items) and the holder that swaps bundles.

Loading is blocking and runs off the event loop; the swap itself is one reference assignment on the loop.
Requests pin the model they started on (:meth:`ModelHolder.use`), so a retired model is closed only after
the last request on it has finished.

Two shapes, one interface. A bundle ranked exactly (at most ``space.vectorindex.EXACT_ROWS`` images)
holds its unit vectors and every image's answer template in memory, as it always did. A larger one keeps
nothing per image in the process: vectors are read through :class:`~space.vectorindex.LazyRows` from the
memory-mapped ``.npy`` files (only the rows an answer touches), items through the mapped item table
(``space.items``), answer templates are made for the hits of an answer and remembered in a bounded LRU,
and every ranking goes through a memory-mapped index: so start-up reads no vectors, the processes and
replicas of a host share one copy in the page cache, and a swap adds little beside the old model.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import onnxruntime as ort

from space import bundle, vectorindex
from space.centering import Centering
from space.errors import NoBundle
from space.hashtags import POOL_INDEX, Hashtagger
from space.items import ItemTable, Records
from space.query import Query
from space.search import SEARCH_INDEX, load_search_vectors, search_vectors
from space.spelling import Speller
from space.textspace import TextSpace, unit
from space.vectorindex import LazyRows, build_index, language_index_name, load_index, map_rows

log = logging.getLogger(__name__)

# Answer templates remembered per model of a large bundle (a few hundred bytes each): the hits of the
# queries people repeat stay formatted, and memory stays bounded whatever the corpus.
TEMPLATE_CACHE = 65_536


@dataclass
class Model:
    """Everything one bundle version serves with."""

    version: str
    path: Path
    manifest: dict[str, Any]
    space: TextSpace
    image_vectors: np.ndarray | LazyRows  # (N, D) unit rows as photos are compared (centred if the bundle is)
    table: ItemTable
    langs: dict[str, np.ndarray]  # language → keys of its items
    images_index: Any
    words_index: Any
    session: Any
    input_name: str
    output_name: str
    centering: Centering | None = None  # image search compares centred vectors (space.centering)
    # Text queries are compared with these unit rows: image and caption together (space.search) in a
    # joint-space bundle, else the image vectors themselves.
    search_vectors: np.ndarray | LazyRows | None = None
    search_index: Any = None
    # Language-filtered text queries: each language's rows of search_vectors (a bundle ranked exactly),
    # or its own index over them (key = row; a language holding every row uses search_index).
    lang_vectors: dict[str, np.ndarray] = field(default_factory=dict)
    lang_indexes: dict[str, Any] = field(default_factory=dict)
    hashtagger: Hashtagger | None = None  # the bundle's hashtag model; None: the nearest words instead
    pool_vectors: np.ndarray | LazyRows | None = None  # unit image vectors of the hashtagger's voting posts
    pool_index: Any = None  # their index (key = pool position), searched above EXACT_ROWS voting posts
    word_rows: np.ndarray | LazyRows | None = None  # the unit word vectors (key = word row); None: space's
    eager: bool = True  # every answer template made at load (a bundle ranked exactly) or on demand
    inflight: int = 0
    retired: bool = field(default=False)
    closed: bool = field(default=False)
    # Each image's answer fields and the same as pre-encoded JSON around the score (engine.service): per
    # request only the scores are formatted, which is ~10x cheaper than json.dumps of the answer dicts.
    hits: Sequence[dict[str, Any]] = field(init=False, repr=False)
    hit_json: Sequence[tuple[str, str]] = field(init=False, repr=False)
    word_json: list[str] = field(init=False, repr=False)
    ids: Sequence[str] = field(init=False, repr=False)  # public image id per key
    items: Sequence[dict[str, Any]] = field(init=False, repr=False)  # images.json's item per key

    def __post_init__(self) -> None:
        if self.search_vectors is None:
            self.search_vectors, self.search_index = self.image_vectors, self.images_index
        if self.word_rows is None:
            self.word_rows = self.space.unit_vectors
        if self.hashtagger is not None and self.pool_vectors is None:
            self.pool_vectors = np.asarray(self.image_vectors[self.hashtagger.pool])
        n = len(self.table)
        if self.eager:
            records = self.table.records()
            self.items = [{k: v for k, v in r.items() if k != "id"} for r in records]
            self.ids = [str(r["id"]) for r in records]
            self.hits = hit_templates(self.ids, self.items)
            self.hit_json = [json_around_score(hit) for hit in self.hits]
        else:
            hit = _hit_maker(self.table)
            self.items = Records(self.table)
            self.ids = _Lazy(n, lambda row: str(hit(row)["id"]))
            self.hits = _Lazy(n, hit)
            self.hit_json = _Lazy(n, functools.lru_cache(maxsize=TEMPLATE_CACHE)(
                lambda row: json_around_score(hit(row))))
        self.word_json = [json_around_score({"word": w, "score": 0.0})[0] for w in self.space.words]

    @property
    def framing(self) -> str:
        """How a photo sent to this bundle is framed for its encoder (the bundle's own: space.images)."""
        return bundle.manifest_framing(self.manifest)

    @property
    def n_images(self) -> int:
        """How many images the bundle serves."""
        return len(self.table)

    def row_of(self, image_id: str) -> int | None:
        """The key of the image with public id ``image_id``, or None."""
        return self.table.row_of(image_id)

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


def _hit_maker(table: ItemTable) -> Callable[[int], dict[str, Any]]:
    """Row → its answer template, remembered in a bounded LRU.

    The function holds the table, never the model: the model holds it, and a cycle through the model
    would outlive a swap (the engine freezes loaded objects out of the cycle collector's reach).
    """
    @functools.lru_cache(maxsize=TEMPLATE_CACHE)
    def hit(row: int) -> dict[str, Any]:
        record = table.record(row)
        return hit_templates([str(record["id"])], [record])[0]

    return hit


class _Lazy(Sequence[Any]):
    """A read-only sequence whose items are computed (and cached by ``get``) when asked for."""

    def __init__(self, n: int, get: Callable[[int], Any]) -> None:
        self._n = n
        self._get = get

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._get(j) for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(i)
        return self._get(i)


def image_url(image_id: str) -> str:
    """The engine URL of an image file."""
    return "/v1/images/" + quote(image_id, safe="")


def hit_templates(ids: Sequence[str], items: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
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


@dataclass(frozen=True)
class _Graph:
    """Build and search settings of an index."""

    connectivity: int
    expansion_add: int
    expansion_search: int

    def build(self, rows: np.ndarray, keys: np.ndarray | None = None) -> Any:
        # A background load must not starve the workers: one thread.
        return build_index(rows, None, threads=1, keys=keys, connectivity=self.connectivity,
                           expansion_add=self.expansion_add, expansion_search=self.expansion_search)


def _graph(count: int, text: bool) -> _Graph:
    """The settings of an index of ``count`` rows; ``text``: one text queries walk (searched wider)."""
    width = (vectorindex.text_expansion_search_for if text else vectorindex.expansion_search_for)(count)
    return _Graph(vectorindex.CONNECTIVITY, vectorindex.EXPANSION_ADD, width)


def _index(path: Path, vectors: Any, name: str, usable: bool = True, text: bool = False) -> Any:
    graph = _graph(len(vectors), text)
    if path.is_file() and not usable:
        log.warning("%s holds other vectors than the ones served (uncentred): rebuilding it in memory", path)
    elif path.is_file():
        index = load_index(path, expansion_search=graph.expansion_search)
        if len(index) == len(vectors):
            return index
        log.warning("%s holds %d vectors, the .npy %d: rebuilding it in memory",
                    path, len(index), len(vectors))
    else:
        log.info("bundle has no %s: building it in memory from %d vectors", name, len(vectors))
    return graph.build(np.asarray(vectors))


def _optional_index(path: Path, vectors: Any, name: str, count: int, keys: np.ndarray | None = None,
                    text: bool = False) -> Any:
    """An index that only a set above EXACT_ROWS needs: its file when it holds ``count`` vectors, else
    (an older bundle) one built in memory when the set is searched through an index at all."""
    graph = _graph(count, text)
    if path.is_file():
        index = load_index(path, expansion_search=graph.expansion_search)
        if len(index) == count:
            return index
        log.warning("%s holds %d vectors, expected %d: not used", path, len(index), count)
    if vectorindex.exact_for(count):
        return None
    log.info("bundle has no %s: building it in memory from %d vectors", name, count)
    return graph.build(np.asarray(vectors[keys] if keys is not None else vectors), keys)


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


def _items(path: Path) -> ItemTable:
    """The bundle's mapped item table, or (a bundle published before it) one built from images.json."""
    table = ItemTable.open(path)
    if table is not None:
        return table
    meta = json.loads((path / bundle.IMAGE_META).read_text(encoding="utf-8"))
    return ItemTable.from_items(list(meta["items"]))


@dataclass(frozen=True)
class _Vectors:
    """The bundle's served vectors: in memory (ranked exactly) or read on demand from the mapped files."""

    images: np.ndarray | LazyRows
    search: np.ndarray | LazyRows | None


def _vectors(path: Path, centering: Centering | None, eager: bool) -> _Vectors:
    raw = np.load(path / bundle.IMAGE_VECTORS, mmap_mode="r")
    if raw.ndim != 2:
        raise bundle.BundleInvalid(f"{path.name}: {bundle.IMAGE_VECTORS} is not a matrix.")
    if centering is not None and centering.image_mean.shape != (raw.shape[1],):
        raise bundle.BundleInvalid(f"{path.name}: centering.npz does not match the {raw.shape[1]}-d vectors.")
    captions_path = path / bundle.CAPTION_VECTORS
    if eager:
        raw = np.asarray(raw)
        images = unit(raw if centering is None else centering.images(raw))
        return _Vectors(images, load_search_vectors(path, raw))
    raw = map_rows(path / bundle.IMAGE_VECTORS)
    n, dim = raw.shape

    def image_rows(keys: np.ndarray) -> np.ndarray:
        rows = np.asarray(raw[keys], np.float32)
        return unit(rows if centering is None else centering.images(rows))

    search = None
    if captions_path.is_file():
        captions = map_rows(captions_path)
        if captions.shape != raw.shape:
            raise bundle.BundleInvalid(f"{captions_path.name} holds {captions.shape}, the image vectors "
                                       f"{raw.shape}")

        def search_rows(keys: np.ndarray) -> np.ndarray:
            return search_vectors(np.asarray(raw[keys], np.float32), np.asarray(captions[keys], np.float32))

        search = LazyRows(n, dim, search_rows)
    return _Vectors(LazyRows(n, dim, image_rows), search)


def _pool_vectors(tagger: Hashtagger | None, images: np.ndarray | LazyRows) -> np.ndarray | LazyRows | None:
    """The voting posts' rows of ``images``: in memory when they are ranked exactly, else read on demand."""
    if tagger is None:
        return None
    pool = tagger.pool
    if isinstance(images, np.ndarray) or vectorindex.exact_for(len(pool)):
        return np.asarray(images[pool])
    return LazyRows(len(pool), images.shape[1], lambda p: images[pool[p]])


def load_model(path: Path, ort_threads: int = 1, encoder: str = "fp32", speller: Speller | None = None,
               spelling: bool = True) -> Model:
    """Check (``space.bundle.verify_once``) and load the bundle at ``path``; raises ``BundleInvalid``.

    ``speller``: the served model's, kept when the new bundle has the same vocabulary (only the speller is
    handed over: nothing here may keep the served model, whose memory must go with the swap). ``spelling``
    False leaves the spelling index to be built later (``Model.space.speller.prepare``: the engine's first
    start serves before it; a lookup before then builds it itself).
    """
    started = time.perf_counter()
    manifest = bundle.verify_once(path)
    space = TextSpace.load(path, mmap=True, share_speller=speller)
    if spelling:
        space.speller.prepare()
    words = space.vectors
    word_rows = (space.unit_vectors if vectorindex.exact_for(len(words))
                 else LazyRows(len(words), words.shape[1], lambda k: unit(np.asarray(words[k], np.float32))))
    centering = Centering.load(path)
    table = _items(path)
    n = len(table)
    eager = vectorindex.exact_for(n)
    vectors = _vectors(path, centering, eager)
    if len(table) != len(vectors.images):
        raise bundle.BundleInvalid(
            f"{path.name}: {len(table)} items for {len(vectors.images)} image vectors.")
    langs = table.language_rows()
    session = _encoder_session(path, manifest, ort_threads, encoder)
    images_index = _index(path / bundle.IMAGE_INDEX, vectors.images, bundle.IMAGE_INDEX,
                          usable=centering is None or bool(manifest.get("image_index_centred")),
                          text=vectors.search is None)  # text queries walk it in a bundle without captions
    search_index = (None if vectors.search is None
                    else _index(path / SEARCH_INDEX, vectors.search, SEARCH_INDEX, text=True))
    text_rows = vectors.images if vectors.search is None else vectors.search
    lang_vectors: dict[str, np.ndarray] = {}
    lang_indexes: dict[str, Any] = {}
    for lang, rows in langs.items():
        if len(rows) == n:  # one language holds every row: the unfiltered rows and index are its own
            if eager:
                lang_vectors[lang] = np.asarray(text_rows)
            else:
                lang_indexes[lang] = search_index if search_index is not None else images_index
        elif eager:
            lang_vectors[lang] = np.asarray(text_rows)[rows]
        else:
            name = language_index_name(lang)
            index = None if name is None else _optional_index(path / name, text_rows, name, len(rows), rows,
                                                              text=True)
            if index is not None:
                lang_indexes[lang] = index
    tagger = Hashtagger.load(path, mmap=True)
    pool_vectors = _pool_vectors(tagger, vectors.images)
    pool_index = (None if tagger is None or pool_vectors is None
                  else _optional_index(path / POOL_INDEX, pool_vectors, POOL_INDEX, len(tagger.pool)))
    model = Model(
        version=str(manifest["version"]),
        path=path,
        manifest=manifest,
        space=space,
        image_vectors=vectors.images,
        table=table,
        langs=langs,
        images_index=images_index,
        centering=centering,
        words_index=_index(path / bundle.WORD_INDEX, space.vectors, bundle.WORD_INDEX),
        word_rows=word_rows,
        session=session,
        input_name=session.get_inputs()[0].name,
        output_name=session.get_outputs()[0].name,
        search_vectors=vectors.search,
        search_index=search_index,
        lang_vectors=lang_vectors,
        lang_indexes=lang_indexes,
        hashtagger=tagger,
        pool_vectors=pool_vectors,
        pool_index=pool_index,
        eager=eager,
    )
    log.info(
        "loaded bundle %s (%d images, %d words) in %.2f s",
        model.version, n, len(space.words), time.perf_counter() - started,
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
