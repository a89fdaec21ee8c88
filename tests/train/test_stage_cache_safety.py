"""Issue 28: the stage cache in a shared models folder: DONE.json whole or absent, one trainer per work dir.

Before, ``DONE.json`` was written in place (a crash or a full disk mid-write left a truncated one, which
marks the stage done and then fails to parse), and nothing kept two trainers of one corpus from writing the
same stage folders and fixed temporary names (``*.partial``, ``*.tmp``) at once.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from tests.conftest import ROOT
from train.stages import Stage

# Writes a DONE.json larger than the file-size limit the process runs under (RLIMIT_FSIZE, SIGXFSZ ignored:
# the kernel refuses the write with EFBIG, as a full disk would).
WRITE_UNDER_LIMIT = """
import resource, signal, sys
from pathlib import Path
from train.stages import Stage
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
stage = Stage.under(Path(sys.argv[1]), "text", "key")
resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000))
try:
    stage.mark_done({"words": ["w" * 50] * 200})
except OSError as exc:
    print("refused:", exc.errno)
"""


def test_done_json_is_whole_or_absent(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-c", WRITE_UNDER_LIMIT, str(tmp_path)], cwd=ROOT, text=True,
                         capture_output=True, check=True)
    assert out.stdout.startswith("refused:"), out.stdout + out.stderr
    stage = Stage.under(tmp_path, "text", "key")
    assert not stage.done  # redone next run, not "done" with half a record
    assert [p.name for p in stage.dir.iterdir()] == []  # no temporary file left behind either


def test_one_trainer_at_a_time_per_work_dir(tmp_path: Path) -> None:
    from train.stages import work_lock

    entered = threading.Event()
    release = threading.Event()

    def second() -> None:
        with work_lock(tmp_path):
            entered.set()

    with work_lock(tmp_path):
        thread = threading.Thread(target=second)
        thread.start()
        assert not entered.wait(1.0)  # blocked while the first holds the work dir
        release.set()
    assert entered.wait(60)
    thread.join(60)
    assert (tmp_path / ".lock").read_text().strip().isdigit()  # the holder's pid, for the waiting message
