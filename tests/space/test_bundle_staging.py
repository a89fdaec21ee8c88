"""Trainers sharing a models folder: the start-of-run sweep removes only dead writers' staging folders.

Issue 19, item 3: ``clean_staging`` (run at every ``train all`` start) used to delete every ``.tmp-*``
folder whatever its age, a concurrently running trainer's included.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from space import bundle
from tests.conftest import ROOT

# A second trainer: opens a staging folder under argv[1], writes a file, says where, and waits.
WRITER = """
import sys, time
from pathlib import Path
from space import bundle
with bundle.staging(Path(sys.argv[1])) as tmp:
    (tmp / "words.npy").write_bytes(b"half a bundle")
    print(tmp, flush=True)
    time.sleep(600)
"""


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_running_writers_staging_survives_the_sweep_until_it_dies(tmp_path: Path) -> None:
    models = tmp_path / "models"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(models)], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout is not None
        staged = Path(writer.stdout.readline().strip())
        assert staged.is_dir()
        _age(staged, 2 * 24 * 3600)  # however old it looks, its writer still runs
        assert bundle.clean_staging(models) == 0
        assert (staged / "words.npy").read_bytes() == b"half a bundle"
        writer.send_signal(signal.SIGKILL)  # killed mid-write: the kernel drops its lock
        writer.wait(timeout=60)
        assert bundle.clean_staging(models) == 1
        assert not staged.exists()
        assert sorted(p.name for p in models.iterdir()) == []  # the folder and its lock file
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=60)
        if writer.stdout is not None:
            writer.stdout.close()


def test_this_processs_open_staging_survives_the_sweep(tmp_path: Path) -> None:
    with bundle.staging(tmp_path) as staged:
        (staged / "words.npy").write_bytes(b"x")
        _age(staged, 3600)
        (tmp_path / ".tmp-deadwriter").mkdir()  # no lock: its writer is gone
        assert bundle.clean_staging(tmp_path) == 1
        assert staged.is_dir() and not (tmp_path / ".tmp-deadwriter").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [staged.name]  # unpublished; its lock is gone
    assert bundle.clean_staging(tmp_path) == 1


def test_orphan_lock_files_are_swept_only_when_old_and_free(tmp_path: Path) -> None:
    orphan = tmp_path / ".tmp-0123456789ab.lock"
    orphan.write_text("")
    assert bundle.clean_staging(tmp_path) == 0
    assert orphan.exists()  # young: a writer may be between its lock and its folder
    _age(orphan, 2 * bundle.ACTIVE_TMP_STALE_S)
    bundle.clean_staging(tmp_path)
    assert not orphan.exists()
