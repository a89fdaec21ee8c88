"""The trainer worker's job time limit is a setting (TRAIN_JOB_TIMEOUT_HOURS): a job running past it is
stopped with its process group and the lock released; a bad value stops the worker with one line."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.retrain import ArqRetrainManager
from tests.bot.test_retrain_arq import FAKE_TRAIN, retrain_settings, start_worker
from tests.conftest import RedisServer
from train.worker import DEFAULT_TIMEOUT_HOURS, build_parser, worker_settings

WORKER = str(Path(sys.executable).with_name("topicspace-trainer-worker"))


def _parse(env: dict[str, str]) -> argparse.Namespace:
    parser = build_parser()
    parser.env = env
    return parser.parse([])


def _hours(env: dict[str, str]) -> float:
    return float(_parse(env).train_job_timeout_hours)


def test_the_time_limit_is_read_from_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert _hours({}) == _hours({"TRAIN_JOB_TIMEOUT_HOURS": " "}) == DEFAULT_TIMEOUT_HOURS
    assert _hours({"TRAIN_JOB_TIMEOUT_HOURS": "6"}) == 6
    assert worker_settings("redis://localhost:1/0", 90.0)["job_timeout"] == 90.0
    for bad in ("0", "-2", "two", "inf", "nan"):
        with pytest.raises(SystemExit) as stop:
            _parse({"TRAIN_JOB_TIMEOUT_HOURS": bad})
        assert stop.value.code == 2 and "TRAIN_JOB_TIMEOUT_HOURS" in capsys.readouterr().err


def test_a_bad_value_stops_the_worker_with_one_line(redis_server: RedisServer) -> None:
    env = {**os.environ, "REDIS_URL": redis_server.url, "TRAIN_JOB_TIMEOUT_HOURS": "two days"}
    out = subprocess.run([WORKER], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "TRAIN_JOB_TIMEOUT_HOURS: expected" in out.stderr and "'two days'" in out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture
def worker(redis_server: RedisServer, tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    proc = start_worker(redis_server, tmp_path,
                        TRAIN_ARGS="--steps 600 --step-s 0.5",  # five minutes
                        TRAIN_JOB_TIMEOUT_HOURS=str(4 / 3600))  # four seconds
    yield proc
    proc.terminate()
    proc.wait(timeout=20)


async def test_a_job_past_the_limit_is_stopped_and_frees_the_lock(
    worker: subprocess.Popen[bytes], redis_server: RedisServer, tmp_path: Path
) -> None:
    manager = ArqRetrainManager(retrain_settings(redis_server.url, tmp_path), poll_s=0.2)
    try:
        await manager.start()
        final = await asyncio.wait_for(manager.wait(), 120)  # the job alone would run five minutes
        assert final.state in ("cancelled", "failed") and final.version is None
        assert await manager.lock.read() is None
    finally:
        await manager.close()
    out = subprocess.run(["pgrep", "-f", f"{FAKE_TRAIN} --corpus {tmp_path}"], capture_output=True, text=True)
    assert out.stdout.strip() == ""
