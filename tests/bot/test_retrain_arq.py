"""/retrain through the compose path: the bot queues with arq, the trainer worker runs the job.

Real redis-server, the real `topicspace-trainer-worker` console script (as compose runs it), and the
progress-protocol stand-in for `python -m train all`.
"""

from __future__ import annotations

import asyncio
import contextlib
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


def retrain_settings(redis_url: str, tmp_path: Path, *extra: str) -> RetrainSettings:
    """The bot's side of an arq retrain against :func:`start_worker`'s worker and the fake trainer."""
    return RetrainSettings(
        corpus=str(tmp_path / "corpus"), format="jsonl", models_dir=str(tmp_path / "models"),
        extra_args=extra, command=(sys.executable, str(FAKE_TRAIN)), redis_url=redis_url, mode="arq",
    )


def start_worker(redis_server: RedisServer, tmp_path: Path, **env_extra: str) -> subprocess.Popen[bytes]:
    """The console script compose runs, from this interpreter's environment (``env_extra`` on top)."""
    exe = str(Path(sys.executable).with_name("topicspace-trainer-worker"))
    env = {
        **os.environ,
        "REDIS_URL": redis_server.url,
        "TRAIN_COMMAND": f"{sys.executable} {FAKE_TRAIN}",
        "TRAIN_CORPUS": str(tmp_path / "corpus"),
        "TRAIN_FORMAT": "jsonl",
        "MODELS_DIR": str(tmp_path / "models"),
        "TRAIN_ARGS": os.environ.get("FAKE_TRAIN_ARGS", "--steps 4 --step-s 0.4"),
        **env_extra,
    }
    log = (tmp_path / "worker.log").open("ab")
    return subprocess.Popen([exe], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(redis_server, tmp_path)
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


async def test_queued_job_runs_in_worker_and_reports_progress(
    worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
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
    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
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


# ---- issue 28: a killed trainer, the lock's owner, no pickle -----------------------------------------

async def _running(manager: ArqRetrainManager) -> None:
    for _ in range(300):  # until the worker reports progress
        if (await manager.status()).stage == "image":
            return
        await asyncio.sleep(0.2)
    raise AssertionError("the job never reported progress")


def _kill_trainer_service(worker: subprocess.Popen[bytes]) -> None:
    """What `docker compose kill trainer` does: SIGKILL the worker and the trainer it started."""
    import signal

    trainers = subprocess.run(["pgrep", "-f", str(FAKE_TRAIN)], capture_output=True, text=True).stdout.split()
    worker.kill()
    worker.wait(timeout=20)
    for pid in trainers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


async def test_cancel_after_the_trainer_service_was_killed_frees_retrain_at_once(
    slow_worker: None, worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 28: cancel waited 30 s in job.abort, raised, and left the lock for a day."""
    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
    try:
        await manager.start()
        await _running(manager)
        _kill_trainer_service(worker)
        info = await manager.lock.read()
        assert info is not None and info["state"] == "running"
        # Cancel right away: it returns once the heartbeat is a few beats old (no worker runs the job).
        assert await asyncio.wait_for(manager.cancel(), 60)
        assert await manager.lock.read() is None
        assert (await manager.status()).state == "cancelled"
        assert (await manager.start()).state == "running"  # /retrain works again
    finally:
        await manager.close()


async def test_a_killed_trainer_service_frees_retrain_within_its_heartbeat(
    slow_worker: None, worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Without a cancel: the killed worker's lock expires (HEARTBEAT_TTL_S), not after 7 days; the restarted
    worker does not run the dead job again."""
    from space.jobs import HEARTBEAT_TTL_S

    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
    try:
        await manager.start()
        await _running(manager)
        _kill_trainer_service(worker)
        with pytest.raises(RetrainError, match="already running"):
            await manager.start()
        for _ in range(int(4 * HEARTBEAT_TTL_S / 0.2)):
            if await manager.lock.read() is None:
                break
            await asyncio.sleep(0.2)
        assert await manager.lock.read() is None
        assert (await manager.status()).state == "failed"  # it ended without a result
        restarted = start_worker(redis_server, tmp_path)
        try:
            assert (await manager.start()).state == "running"
            await _running(manager)  # the new job runs in the restarted worker
            assert await manager.cancel()
            assert await manager.lock.read() is None
        finally:
            restarted.terminate()
            restarted.wait(timeout=20)
    finally:
        await manager.close()


async def test_the_worker_stops_a_job_whose_lock_another_job_holds(
    slow_worker: None, worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 28: the worker deleted the lock without checking its owner, so two trainings could overlap."""
    import json

    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
    try:
        await manager.start()
        await _running(manager)
        other = {"job_id": "retrain-other", "token": "retrain-other", "state": "queued"}
        await manager.lock.redis.set("topicspace:retrain:lock", json.dumps(other), ex=600)
        for _ in range(300):  # the heartbeat finds the lock is not its own and stops the trainer
            out = subprocess.run(["pgrep", "-f", str(FAKE_TRAIN)], capture_output=True, text=True)
            if not out.stdout.strip():
                break
            await asyncio.sleep(0.2)
        assert out.stdout.strip() == ""
        await asyncio.sleep(1.0)  # let the job's end (and its lock release) pass
        assert await manager.lock.read() == other  # the other job's lock survived
    finally:
        await manager.close()


async def test_jobs_and_results_cross_redis_as_json(
    worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    """Issue 28: arq pickled jobs and results, so whoever could write to Redis ran code in bot and worker."""
    import json

    import redis.asyncio as aioredis

    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
    client = aioredis.from_url(redis_server.url)
    try:
        await manager.start()
        info = await manager.lock.read()
        assert info is not None
        job_id = info["job_id"]
        queued = await client.get(f"arq:job:{job_id}")
        assert queued is None or json.loads(queued)["f"] == "retrain"
        assert (await manager.wait()).state == "done"
        result = json.loads(await client.get(f"arq:result:{job_id}"))
        assert result["r"]["stage"] == "done" and result["s"] is True
        # A pickled record planted in Redis is refused, never unpickled.
        import pickle
        await client.set(f"arq:result:{job_id}", pickle.dumps({"r": 1}))
        job = await manager._job({"job_id": job_id})
        with pytest.raises(Exception) as caught:
            await job.result(timeout=1)
        assert "pickle" not in type(caught.value).__module__
    finally:
        await client.aclose()
        await manager.close()
