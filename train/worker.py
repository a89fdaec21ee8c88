"""The trainer service's job worker: runs `/retrain` jobs queued through Redis with arq.

In the compose deployment the bot enqueues ``retrain`` (``bot.retrain.ArqRetrainManager``) and this
worker — the only process with torch — runs `python -m train all` as a subprocess, mirroring each
progress record into Redis (``space.jobs.PROGRESS_KEY``) so the bot can edit the admin's message.
An arq abort (``/retrain cancel``) stops the whole process group; the old bundle keeps serving, since
a bundle becomes visible only when the trainer publishes it complete.

Run: ``python -m train.worker`` (console script ``topicspace-trainer-worker``), settings from the
environment: ``REDIS_URL``, ``TRAIN_JOB_TIMEOUT_HOURS`` (a job still running after it is stopped like a
cancelled one; default :data:`DEFAULT_TIMEOUT_HOURS`) and the job variables of
``space.jobs.RetrainSettings``; the job inherits the worker's environment (``TRAIN_TOPIC``, ``LOG_LEVEL``…)
and writes its log to the worker's stdout/stderr.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from space.jobs import LOCK_KEY, PROGRESS_KEY, RetrainSettings, read_progress

log = logging.getLogger(__name__)

POLL_S = 1.0
RECORD_TTL_S = 7 * 24 * 3600
# The default recipe on a crawl of the original's size (623,199 posts read, 325,253 kept) on the reference
# machine's two cores takes about 30 hours, nearly all of it the image features at 10 crops
# (docs/benchmarks.md, "Original scale"); 48 hours leave room for a busier machine. A GPU machine or
# `--quick` needs far less: set it lower there to free a stuck worker sooner.
DEFAULT_TIMEOUT_HOURS = 48.0


def job_timeout_s(env: Mapping[str, str]) -> float:
    """``TRAIN_JOB_TIMEOUT_HOURS`` in seconds (unset or empty: :data:`DEFAULT_TIMEOUT_HOURS`)."""
    raw = env.get("TRAIN_JOB_TIMEOUT_HOURS", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT_HOURS * 3600
    try:
        hours = float(raw)
    except ValueError:
        hours = float("nan")
    if not 0 < hours < float("inf"):
        raise ValueError(f"TRAIN_JOB_TIMEOUT_HOURS={raw!r}: give the hours a retraining may take, e.g. 48")
    return hours * 3600


async def _mirror(redis: Any, record: dict[str, Any] | None) -> None:
    if record is not None:
        await redis.set(PROGRESS_KEY, json.dumps(record), ex=RECORD_TTL_S)


async def _stop_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 20)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()


async def retrain(ctx: dict[str, Any]) -> dict[str, Any]:
    """The arq job: run one training, mirror its progress, return its final record."""
    settings: RetrainSettings = ctx["retrain_settings"]
    redis = ctx["redis"]
    fd, name = tempfile.mkstemp(prefix="retrain-", suffix=".jsonl")
    os.close(fd)
    progress = Path(name)
    await redis.delete(PROGRESS_KEY)
    try:
        argv = settings.argv(progress)
        # The trainer's own output goes where the worker's goes (the container's log), not to /dev/null.
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    start_new_session=True)
        log.info("retraining started, pid %d", proc.pid)
        try:
            while proc.returncode is None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), POLL_S)
                await _mirror(redis, read_progress(progress))
        except asyncio.CancelledError:
            log.info("retraining aborted, stopping pid %d", proc.pid)
            await _stop_group(proc)
            await _mirror(redis, {"stage": "cancelled"})
            raise
        final = read_progress(progress) or {}
        if final.get("stage") != "done":
            reason = final.get("error") if final.get("stage") == "failed" else None
            final = {"stage": "failed", "error": reason or f"the trainer exited with code {proc.returncode}"}
        await _mirror(redis, final)
        log.info("retraining ended: %s", final.get("stage"))
        return final
    except ValueError as exc:  # not configured
        final = {"stage": "failed", "error": str(exc)}
        await _mirror(redis, final)
        return final
    finally:
        progress.unlink(missing_ok=True)
        await redis.delete(LOCK_KEY)


async def _startup(ctx: dict[str, Any]) -> None:
    ctx["retrain_settings"] = RetrainSettings.from_env(os.environ)


def worker_settings(redis_url: str, job_timeout: float = DEFAULT_TIMEOUT_HOURS * 3600) -> dict[str, Any]:
    """arq worker settings: abortable jobs stopped after ``job_timeout`` seconds.

    One job at a time is the launcher's Redis lock (``LOCK_KEY``), not ``max_jobs=1``: with a single
    slot, arq's poll loop waits on that slot and never sees an abort request for the running job.
    """
    from arq.connections import RedisSettings

    return {
        "functions": [retrain],
        "on_startup": _startup,
        "redis_settings": RedisSettings.from_dsn(redis_url),
        "max_jobs": 2,
        "job_timeout": job_timeout,
        "allow_abort_jobs": True,
        "keep_result": 7 * 24 * 3600,
    }


def main() -> None:
    """Entry point of ``python -m train.worker`` / ``topicspace-trainer-worker``."""
    from arq.worker import run_worker

    logging.basicConfig(
        level=os.environ.get("LOG_LEVEL", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        raise SystemExit("REDIS_URL must be set: the worker takes its jobs from Redis.")
    try:
        timeout = job_timeout_s(os.environ)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    log.info("retraining jobs are stopped after %.1f hours (TRAIN_JOB_TIMEOUT_HOURS)", timeout / 3600)
    run_worker(worker_settings(redis_url, timeout))


if __name__ == "__main__":
    main()
