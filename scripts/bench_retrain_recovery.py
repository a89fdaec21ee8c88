"""A killed trainer service and the time until ``/retrain`` works again (issue 28).

Starts a redis-server and the trainer worker (``python -m train.worker``, as compose runs it) with the
progress-protocol stand-in for ``python -m train all`` (``tests/bot/fake_train.py``, a long job), queues a
job through the bot's ``ArqRetrainManager``, waits until it reports progress, then does what ``docker
compose kill trainer`` does: SIGKILL the worker and the trainer it started. Two ways back, each timed from
the kill until ``start()`` queues a new job:

- ``cancel``: the admin sends ``/retrain cancel`` at once (``ArqRetrainManager.cancel``);
- ``wait``: nobody does anything; ``/retrain`` is tried every 0.2 s.

    python scripts/bench_retrain_recovery.py [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pagetools import free_port  # noqa: E402

from bot.retrain import ArqRetrainManager, RetrainError  # noqa: E402
from space.jobs import RetrainSettings  # noqa: E402

FAKE_TRAIN = ROOT / "tests" / "bot" / "fake_train.py"




def _worker(url: str, work: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "REDIS_URL": url, "PYTHONPATH": str(ROOT),
           "TRAIN_COMMAND": f"{sys.executable} {FAKE_TRAIN}", "TRAIN_CORPUS": str(work),
           "TRAIN_FORMAT": "jsonl", "MODELS_DIR": str(work / "models"),
           "TRAIN_ARGS": "--steps 2000 --step-s 0.5"}
    log = (work / "worker.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", "train.worker"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, cwd=ROOT)


def _kill(worker: subprocess.Popen[bytes]) -> float:
    trainers = subprocess.run(["pgrep", "-f", str(FAKE_TRAIN)], capture_output=True, text=True).stdout.split()
    worker.kill()
    killed = time.monotonic()
    worker.wait(timeout=20)
    for pid in trainers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    return killed


async def _round(url: str, work: Path, how: str) -> dict[str, Any]:
    settings = RetrainSettings(corpus=str(work), format="jsonl", models_dir=str(work / "models"),
                               command=(sys.executable, str(FAKE_TRAIN)), redis_url=url, mode="arq")
    manager = ArqRetrainManager(settings, poll_s=0.2)
    worker = _worker(url, work)
    try:
        await manager.start()
        for _ in range(600):
            if (await manager.status()).stage == "image":
                break
            await asyncio.sleep(0.1)
        killed = _kill(worker)
        cancel_s = None
        if how == "cancel":
            await manager.cancel()
            cancel_s = time.monotonic() - killed
        while True:
            try:
                await manager.start()
                break
            except RetrainError:
                await asyncio.sleep(0.2)
        back = time.monotonic() - killed
        # Leave no job behind for the next round: drop the new one's lock (no worker runs it).
        await manager.cancel()
        return {"how": how, "cancel_returned_s": None if cancel_s is None else round(cancel_s, 2),
                "retrain_works_after_s": round(back, 2)}
    finally:
        if worker.poll() is None:
            worker.kill()
        await manager.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="retrain-recovery-"))
    port = free_port()
    server = shutil.which("redis-server") or "redis-server"
    redis_proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(work)], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    rows = []
    try:
        time.sleep(0.5)
        for how in ("cancel", "wait"):
            for _ in range(a.rounds):
                row = asyncio.run(_round(url, work, how))
                print(json.dumps(row), flush=True)
                rows.append(row)
    finally:
        redis_proc.terminate()
        redis_proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)
    for how in ("cancel", "wait"):
        times = [r["retrain_works_after_s"] for r in rows if r["how"] == how]
        print(f"{how}: /retrain works again {min(times):.1f}–{max(times):.1f} s after the kill")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
