"""The stage cache: each stage's output folder under the work dir, keyed by its inputs and config.

A stage folder ``<work>/<stage>-<key>/`` is complete when it holds ``DONE.json`` (written last, with what
the stage reports, atomically: a crash mid-write leaves no DONE.json, never half of one), so a killed stage
is redone and a finished one is reused.

One trainer at a time uses a work dir (:func:`work_lock`, an ``flock`` on ``<work>/.lock``): trainers may
share a models folder, and two runs on one corpus would write the same stage folders and their temporary
files (``*.partial``, ``*.tmp``) at once. A second one waits for the first, then reuses what it cached; the
kernel drops a killed trainer's lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.config import PipelineConfig, config_hash
from train.progress import ProgressReporter

if TYPE_CHECKING:
    from train.image.distributed import DistContext  # torch: imported where torchrun is used

log = logging.getLogger(__name__)

DONE = "DONE.json"
LOCK = ".lock"


@contextlib.contextmanager
def work_lock(work: Path) -> Iterator[None]:
    """Hold the work dir for this run (blocking while another trainer holds it, which is logged)."""
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            log.warning("another trainer (pid %s) is using %s: waiting for it to finish", holder, work)
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def corpus_fingerprint(path: Path) -> str:
    """A cheap fingerprint of the corpus files (names, sizes, mtimes): a changed corpus re-ingests.

    A folder is walked depth first, one directory listing at a time, and hashed as it goes: the memory of
    one listing (1.8 million files at the original's scale in an instaloader folder), never a path object
    for each file. The walk and the hash are those of ``config_hash`` over the sorted ``rglob`` entries, so
    a fingerprint is the same as before.
    """
    path = path.resolve()
    if path.is_file():
        st = path.stat()
        return config_hash([path.name, st.st_size, st.st_mtime_ns])
    digest = hashlib.sha256(b"[[")
    first = True
    for rel, st in _walk(path, ""):
        entry = json.dumps([rel, st.st_size, st.st_mtime_ns], ensure_ascii=False)
        digest.update((entry if first else ", " + entry).encode("utf-8"))
        first = False
    digest.update(b"]]")
    return digest.hexdigest()[:16]


def _walk(folder: Path, prefix: str) -> Iterator[tuple[str, os.stat_result]]:
    """(relative path, stat) of every file under ``folder`` in sorted path order; links to files count as
    their target, links to folders are not entered (as ``Path.rglob``)."""
    try:
        with os.scandir(folder) as it:
            names = sorted(entry.name for entry in it)
    except OSError:
        return
    for name in names:
        full = folder / name
        try:
            st = full.stat()
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            yield prefix + name, st
        elif stat.S_ISDIR(st.st_mode) and not full.is_symlink():
            yield from _walk(full, prefix + name + "/")


@dataclass
class Stage:
    """One cached stage output directory."""

    name: str
    key: str
    dir: Path

    @classmethod
    def under(cls, work: Path, name: str, *parts: Any) -> Stage:
        """The (created) folder of stage ``name`` for these inputs/config parts under ``work``."""
        key = config_hash(name, *parts)
        d = work / f"{name}-{key}"
        d.mkdir(parents=True, exist_ok=True)
        return cls(name, key, d)

    @property
    def done(self) -> bool:
        """Whether a previous run completed this exact stage."""
        return (self.dir / DONE).is_file()

    def mark_done(self, info: dict[str, Any]) -> None:
        """Record completion (written last and whole, so a killed stage is redone)."""
        tmp = self.dir / f"{DONE}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with tmp.open("w", encoding="utf-8") as f:
                f.write(json.dumps(info, ensure_ascii=False, default=str))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.dir / DONE)
        finally:
            tmp.unlink(missing_ok=True)

    def info(self) -> dict[str, Any]:
        """What :meth:`mark_done` recorded."""
        payload: dict[str, Any] = json.loads((self.dir / DONE).read_text(encoding="utf-8"))
        return payload


class StageRunner:
    """Runs cached stages of one run: its config, work dir, progress reporter, torchrun place and timings.

    The pipeline is one; each recipe is handed one, so a recipe never needs the pipeline that calls it.
    """

    def __init__(self, cfg: PipelineConfig, progress: ProgressReporter | None = None,
                 dist: DistContext | None = None) -> None:
        self.cfg = cfg
        self.progress = progress or ProgressReporter(cfg.progress_file)
        self.work = cfg.work_dir
        self.work.mkdir(parents=True, exist_ok=True)
        self.timings: dict[str, float] = {}
        self.dist = dist  # under torchrun: this rank's place; rank 0 runs every stage

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """This run's hold on the work dir (:func:`work_lock`); under torchrun rank 0 holds it for all."""
        if self.dist is not None and not self.dist.is_main:
            yield
            return
        with work_lock(self.work):
            yield

    def stage(self, name: str, *parts: Any) -> Stage:
        """The cache directory of ``name`` for these inputs/config parts."""
        return Stage.under(self.work, name, *parts)

    def run_stage(self, stage: Stage, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Run ``fn`` unless ``stage`` is already done; log timing either way."""
        self.progress.start(stage.name)
        t0 = time.monotonic()
        if stage.done:
            log.info("%s: inputs and config unchanged, reusing %s", stage.name, stage.dir)
            info = stage.info()
        else:
            info = fn()
            if self.dist is None or self.dist.is_main:
                stage.mark_done(info)
        self.progress.end()
        self.timings[stage.name] = round(time.monotonic() - t0, 2)
        log.info("%s: %.1fs", stage.name, self.timings[stage.name])
        return info
