"""One ordered map over forked worker processes, for the corpus stages' pure per-item work (language
detection, reading and decoding photos): the answers are those of a loop in this process, in order."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)

Item = TypeVar("Item")
Result = TypeVar("Result")


def forked_map(fn: Callable[[Item], Result], items: Sequence[Item], workers: int, min_items: int,
               chunksize: int = 200) -> Iterator[Result]:
    """``fn`` of each item, in order: over ``workers`` forked processes when there are at least
    ``min_items`` (fewer: starting the processes costs more than it saves), else here. A pool that breaks
    (a worker killed for memory) leaves the rest to this process."""
    done = 0
    if workers > 1 and len(items) >= min_items:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        from concurrent.futures.process import BrokenProcessPool

        # spawn would re-import the caller's main module, which may not be import-safe; forked children run
        # pure-Python or C-library work on their item only, never the parent's threads' code.
        if "fork" in multiprocessing.get_all_start_methods():
            try:
                with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
                    for result in pool.map(fn, items, chunksize=chunksize):
                        done += 1
                        yield result
                return
            except (BrokenProcessPool, OSError) as exc:
                log.warning("%s in %d processes failed (%s): the other %d items in this one", fn.__name__,
                            workers, exc, len(items) - done)
    for item in items[done:]:
        yield fn(item)
