"""/retrain through the compose path: the bot queues with arq, the trainer worker runs the job.

Real redis-server, the real `topicspace-trainer-worker` console script (as compose runs it), and the
progress-protocol stand-in for `python -m train all`.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.retrain import ArqRetrainManager, RetrainError
from space.jobs import RetrainSettings
from tests.conftest import RedisServer

FAKE_TRAIN = Path(__file__).with_name("fake_train.py")


def _settings(redis_url: str, tmp_path: Path, *extra: str) -> RetrainSettings:
    return RetrainSettings(
        corpus=str(tmp_path / "corpus"), format="jsonl", models_dir=str(tmp_path / "models"),
        extra_args=extra, command=(sys.executable, str(FAKE_TRAIN)), redis_url=redis_url, mode="arq",
    )


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    # The console script compose runs, from this interpreter's environment.
    exe = str(Path(sys.executable).with_name("topicspace-trainer-worker"))
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "TRAIN_COMMAND": f"{sys.executable} {FAKE_TRAIN}",
        "TRAIN_CORPUS": str(tmp_path / "corpus"),
        "TRAIN_FORMAT": "jsonl",
        "MODELS_DIR": str(tmp_path / "models"),
        "TRAIN_ARGS": os.environ.get("FAKE_TRAIN_ARGS", "--steps 4 --step-s 0.4"),
    }
    log = (tmp_path / "worker.log").open("wb")
    proc = subprocess.Popen([exe], env=env, stdout=log, stderr=subprocess.STDOUT)
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


async def test_queued_job_runs_in_worker_and_reports_progress(
    worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    manager = ArqRetrainManager(_settings(redis_server.url, tmp_path), poll_s=0.2)
    try:
        assert (await manager.start()).state == "running"
        with pytest.raises(RetrainError, match="already running"):
            await manager.start()
        final = await manager.wait()
        assert final.state == "done" and final.version == "v-fake"
        assert await manager.lock.read() is None  # the worker released the lock
        assert (await manager.start()).state == "running"  # so another job may start
        assert (await manager.wait()).state == "done"
    finally:
        await manager.close()


@pytest.fixture
def slow_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_TRAIN_ARGS", "--steps 200 --step-s 0.5")


async def test_cancel_aborts_the_worker_job(
    slow_worker: None, worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    manager = ArqRetrainManager(_settings(redis_server.url, tmp_path), poll_s=0.2)
    try:
        await manager.start()
        for _ in range(100):  # wait until the worker reports progress
            if (await manager.status()).stage == "image":
                break
            await asyncio.sleep(0.2)
        assert (await manager.status()).stage == "image"
        assert await manager.cancel()
        assert (await manager.status()).state == "cancelled"
        assert await manager.lock.read() is None
    finally:
        await manager.close()
    # the stand-in trainer was stopped with its process group: nothing of it is left running
    out = subprocess.run(["pgrep", "-f", str(FAKE_TRAIN)], capture_output=True, text=True)
    assert out.stdout.strip() == ""
