"""Issue 28: publishing is durable, not only atomic: every file is on disk before the rename that names it.

Before, neither the bundle's files nor ACTIVE's temporary file were fsynced before their rename, so a power
cut could leave a published bundle (or ACTIVE) naming data that never reached the disk. The order of the
calls is what is checked here (the real file system runs underneath; only the calls are recorded).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from space import bundle


def _stage(tmp: Path) -> None:
    for name in bundle.REQUIRED_FILES:
        (tmp / name).write_bytes(name.encode())
    (tmp / "report").mkdir()
    (tmp / "report" / "stats.json").write_text("{}")
    np.save(tmp / "extra.npy", np.arange(3))


def test_every_file_is_flushed_before_its_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", str(Path(src).resolve())))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with bundle.staging(tmp_path) as tmp:
        _stage(tmp)
        staged = str(tmp.resolve())
        files = {str(p.resolve()) for p in tmp.rglob("*")} | {str((tmp / bundle.MANIFEST).resolve())}
        path = bundle.publish(tmp, tmp_path, {})
    renamed = events.index(("replace", staged))
    flushed = {name for kind, name in events[:renamed] if kind == "fsync"}
    assert files <= flushed, sorted(files - flushed)
    # ACTIVE: its temporary file is flushed before it replaces the pointer.
    pointer = [i for i, (kind, name) in enumerate(events) if kind == "replace" and "/ACTIVE." in name]
    assert len(pointer) == 1
    tmp_active = events[pointer[0]][1]
    assert ("fsync", tmp_active) in events[:pointer[0]]
    assert bundle.active_path(tmp_path) == path
