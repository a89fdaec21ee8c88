"""The engine's running state: bounded worker pool, current model, bundle reloads and the ACTIVE poll.

Plain asyncio, no HTTP: views and tests drive it directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import numpy as np

from engine.batcher import EncodeBatcher
from engine.errors import Busy, TooManyUploads, UnknownVersion
from engine.metrics import Metrics
from engine.model import Model, ModelHolder, load_model
from engine.querybatch import QueryBatcher
from engine.settings import Settings
from engine.singleflight import SingleFlight
from space import bundle
from space.errors import SpaceError
from space.images import load_for_network
from space.query import parse_query
from space.vectorindex import exact_for

log = logging.getLogger(__name__)

T = TypeVar("T")


class Pool:
    """A thread pool with a bounded number of requests waiting for or holding a worker."""

    def __init__(self, name: str, workers: int, limit: int, metrics: Metrics) -> None:
        self.name = name
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"engine-{name}")
        self.limit = limit
        self.waiting = 0
        self.metrics = metrics

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the pool; :class:`Busy` at once when the queue is full."""
        if self.waiting >= self.limit:
            self.metrics.busy.labels(pool=self.name).inc()
            raise Busy("The engine is busy; retry in a moment.")
        self.waiting += 1
        self.metrics.inflight.labels(pool=self.name).inc()
        abandoned = threading.Event()

        def job() -> T:
            # The client went away while this waited for a worker: do not spend a CNN forward on it.
            if abandoned.is_set():
                raise asyncio.CancelledError
            return fn(*args)

        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.executor, job)
        except asyncio.CancelledError:
            abandoned.set()
            self.metrics.abandoned.labels(pool=self.name).inc()
            raise
        finally:
            self.waiting -= 1
            self.metrics.inflight.labels(pool=self.name).dec()

    def close(self) -> None:
        """Wait for running work and stop the threads."""
        self.executor.shutdown(wait=True)


def _settle(model: Model) -> None:
    """After a swap: build the served model's spelling index if it has none yet, and hand the memory the
    retired model freed back to the system (glibc keeps freed heap pages otherwise: ~100 MB at 325,000
    posts stayed resident after each swap)."""
    model.space.speller.prepare()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class Runtime:
    """Worker pools + model holder + reload logic of one app.

    Text queries (well under a millisecond) and image work (decoding + a CNN forward, tens of
    milliseconds) get separate pools, so a burst of photos never queues text queries behind it.
    """

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.holder = ModelHolder()
        self.text = Pool("text", settings.workers, settings.queue_limit, metrics)
        self.images = Pool("image", settings.image_workers, settings.image_queue_limit, metrics)
        # Decoding stays in the image pool; the encoder calls of concurrent photos are batched here.
        self.batcher = EncodeBatcher(settings.encode_batch, settings.encode_wait_s, settings.image_workers,
                                     metrics)
        self.photos = 0  # photo requests admitted (decoding, waiting for or in an encoder batch)
        self.uploads = 0  # photo requests whose body is still arriving
        self.uploads_by_client: dict[str, int] = {}
        # Loads get their own thread so a big bundle never blocks queries (and vice versa).
        self.loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-load")
        self.reload_lock = asyncio.Lock()
        self._after_swap: asyncio.Future[None] | None = None  # _settle of the last swap (kept referenced)
        self.seen_active: str | None = None
        self.flight: SingleFlight[bytes] = SingleFlight()
        self.queries = QueryBatcher(metrics)  # inline text queries of one loop iteration, answered together
        self.vectors: SingleFlight[np.ndarray] = SingleFlight()  # photo encodings by version + sha256
        # Parsing (tokenising, stop words) costs more than a cache hit; queries repeat.
        self.parse = functools.lru_cache(maxsize=8192)(parse_query)

    def inline(self, rows: int, filtered: bool, narrow: bool = False) -> bool:
        """Whether a text query over ``rows`` vectors is cheap enough to answer on the event loop.

        Exactly ranked rows (:func:`space.vectorindex.exact_for`) are: on the 8,052-image Flickr8k bundle
        at 64 connections an answer takes ~0.1 ms, while the hop to a worker thread costs more than that,
        and a worker holding the GIL delays every socket call of the loop (the p99 doubled). A filtered
        query there ranks its language's rows, kept apart at load, so it costs no more than an unfiltered
        one. A ``narrow`` index search (the word index at its default breadth: ~0.5 ms at 60,000 words)
        is as cheap, so it stays on the loop too; wide ones (text queries over many photos) go to the pool.
        """
        return narrow or exact_for(rows)

    async def encode_photo(self, model: Model, data: bytes, max_bytes: int, max_pixels: int) -> np.ndarray:
        """Decode untrusted bytes (image pool) and encode them (batched): the photo's raw vector.

        :class:`Busy` at once when ``image_queue_limit`` photos are already admitted; a bad image raises
        its own ``BadImage``/``ImageTooLarge`` before it can join a batch.
        """
        self._check_photo_room()
        self.photos += 1
        try:
            x = await self.images.run(
                functools.partial(load_for_network, data, model.framing, max_bytes=max_bytes,
                                  max_pixels=max_pixels)
            )
            return await self.batcher.encode(model, x)
        finally:
            self.photos -= 1

    def _check_photo_room(self) -> None:
        if self.photos + self.uploads >= self.settings.image_queue_limit:
            self.metrics.busy.labels(pool="image").inc()
            raise Busy("The engine is busy; retry in a moment.")

    @contextlib.contextmanager
    def uploading(self, client: str) -> Iterator[None]:
        """Admit one photo body from ``client`` before it is read: :class:`Busy` when the photo queue is
        full (its body would only be thrown away after arriving), :class:`TooManyUploads` when the client
        already sends ``uploads_per_client``."""
        self._check_photo_room()
        mine = self.uploads_by_client.get(client, 0)
        if 0 < self.settings.uploads_per_client <= mine:
            raise TooManyUploads(f"At most {self.settings.uploads_per_client} uploads at a time per client.")
        self.uploads += 1
        self.uploads_by_client[client] = mine + 1
        try:
            yield
        finally:
            self.uploads -= 1
            left = self.uploads_by_client.pop(client) - 1
            if left:
                self.uploads_by_client[client] = left

    async def reload(self, version: str | None = None, force: bool = False) -> Model:
        """Load ``version`` (default: the ACTIVE one) off the loop and swap it in.

        Raises ``NoBundle``/``BundleInvalid`` (the current model keeps serving) or :class:`UnknownVersion`.
        """
        models_dir = self.settings.models_dir
        async with self.reload_lock:
            if version is None:
                path = bundle.active_path(models_dir)
            else:
                if version not in bundle.list_versions(models_dir):
                    raise UnknownVersion(f"No bundle version {version!r}.")
                path = models_dir / version
            current = self.holder.current
            if current is not None and current.path == path and not force:
                return current
            loop = asyncio.get_running_loop()
            try:
                # The first bundle is served before its spelling index is built (start-up is the time to
                # /readyz); a swap builds it first, while the old model still serves.
                load = functools.partial(load_model, path, self.settings.ort_threads, self.settings.encoder,
                                         current.space.speller if current is not None else None,
                                         spelling=current is not None)
                model = await loop.run_in_executor(self.loader, load)
                del load
            except SpaceError as exc:
                self.metrics.reloads.labels(result="refused").inc()
                self.holder.last_error = str(exc)
                log.error(
                    "refusing bundle %s: %s (still serving %s)",
                    path.name, exc, current.version if current else "nothing",
                )
                raise
            except Exception as exc:  # a bundle we cannot read must never take the service down
                self.metrics.reloads.labels(result="refused").inc()
                self.holder.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("refusing bundle %s (still serving %s)", path.name,
                              current.version if current else "nothing")
                raise bundle.BundleInvalid(f"{path.name} cannot be loaded: {exc}") from exc
            old = self.holder.swap(model)
            previous = old.version if old else "nothing"
            del old, current  # the retired model's memory goes with its last request, not with this frame
            if self.settings.gc_freeze:
                # The model's ~10^5 long-lived objects (hit templates, vocabulary) leave the collector's
                # view: a full collection no longer walks them in the middle of requests. Refcounting
                # still frees a retired model.
                gc.freeze()
            self.holder.last_error = None
            self.metrics.reloads.labels(result="ok").inc()
            self.metrics.set_bundle(model.version)
            log.info("serving bundle %s (was %s)", model.version, previous)
            # The spelling index of a first bundle, and the C heap a retired model freed, off the loop.
            self._after_swap = loop.run_in_executor(self.loader, _settle, model)
            return model

    async def check_active(self, catch_up: bool = False) -> None:
        """Reload when ``<models>/ACTIVE`` names a different version than last seen.

        ``catch_up`` compares with the served version instead: a replica switched by an announcement may
        serve something else than the ACTIVE it last saw (used after missed announcements).
        """
        active = bundle.active_version(self.settings.models_dir)
        last, self.seen_active = self.seen_active, active
        current = self.holder.current
        compare = (current.version if current is not None else None) if catch_up else last
        if active is None or active == compare:
            return
        # A refused bundle is logged in reload and tried again when ACTIVE changes.
        try:
            await self.reload()
        except SpaceError:
            if self.holder.current is None:
                await self._serve_newest_valid(active)

    async def _serve_newest_valid(self, refused: str) -> None:
        """With nothing served and the ACTIVE bundle refused (corrupt, half-copied): serve the newest
        published bundle that loads rather than none. ACTIVE is left alone (it is the trainer's and the
        admin's word); a later ACTIVE change is loaded as usual."""
        reason = self.holder.last_error
        for version in reversed(bundle.list_versions(self.settings.models_dir)):
            if version == refused:
                continue
            try:
                model = await self.reload(version)
            except SpaceError:
                continue
            log.error("the ACTIVE bundle %s was refused: serving %s, the newest bundle that loads, until "
                      "ACTIVE changes (see /v1/admin/versions for why)", refused, model.version)
            self.holder.last_error = f"ACTIVE bundle {refused} refused ({reason}); serving {model.version}"
            return

    async def poll(self) -> None:
        """Watch ACTIVE forever (cancelled at shutdown)."""
        while True:
            await asyncio.sleep(self.settings.poll_s)
            try:
                await self.check_active()
            except Exception:
                log.exception("ACTIVE poll failed")

    def close(self) -> None:
        """Stop the pools (waits for running work) and drop the model."""
        self.text.close()
        self.images.close()
        self.batcher.executor.shutdown(wait=True)
        self.loader.shutdown(wait=True)
        if self.holder.current is not None:
            self.holder.current.close()
            self.holder.current = None
