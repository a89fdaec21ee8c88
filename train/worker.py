"""The trainer service's job worker: runs `/retrain` jobs queued through Redis with arq.

In the compose deployment the bot enqueues ``retrain`` (``bot.retrain.ArqRetrainManager``) and this
worker — the only process with torch — runs `python -m train all` as a subprocess, mirroring each
progress record into Redis (``space.jobs.PROGRESS_KEY``) so the bot can edit the admin's message.
An arq abort (``/retrain cancel``) stops the whole process group; the old bundle keeps serving, since
a bundle becomes visible only when the trainer publishes it complete.

A job runs only while the one-job lock names it (``space.jobs``: claimed at the start, kept by a heartbeat,
deleted at the end only while still ours): a job the bot gave up on, or one arq hands out again after a
killed worker, is skipped, and a job whose lock is lost (expired while Redis was away) stops its trainer,
so two trainings never overlap. Jobs and results are JSON (``space.jobs.job_serializer``), never pickle.

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
from pathlib import Path
from typing import Any

from space.cli import Parser
from space.envvars import number, text
from space.jobs import (
    ARQ_MISSING,
    BEAT,
    CLAIM,
    HEARTBEAT_S,
    HEARTBEAT_TTL_S,
    JOB_VARIABLES,
    LOCK_KEY,
    PROGRESS_KEY,
    RELEASE,
    RetrainSettings,
    job_deserializer,
    job_serializer,
    read_progress,
)
from space.logs import env_secrets, setup_logging
from space.version import __version__

log = logging.getLogger(__name__)

POLL_S = 1.0
RECORD_TTL_S = 7 * 24 * 3600
# The default recipe on a crawl of the original's size (623,199 posts read, 325,253 kept) on the reference
# machine's two cores takes about 2 h 10 min, most of it the image features at 2 views (docs/benchmarks.md,
# "Original scale"); 48 hours leave room for a busier machine and for 10 centre-framed crops (about 10
# hours of features there). A GPU machine or `--quick` needs far less: set it lower to free a stuck
# worker sooner.
DEFAULT_TIMEOUT_HOURS = 48.0


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


class LockLost(Exception):
    """The one-job lock no longer names this job."""


async def _heartbeat(redis: Any, job_id: str, lost: asyncio.Event) -> None:
    """Keep the lock alive every HEARTBEAT_S while the job runs; set ``lost`` once it is not ours.

    A beat Redis cannot take is retried; once no beat has landed for the lock's whole expiry, the lock
    may be gone and another job may hold it: that counts as lost too.
    """
    loop = asyncio.get_running_loop()
    landed = loop.time()
    while not lost.is_set():
        await asyncio.sleep(HEARTBEAT_S)
        try:
            if not await redis.eval(BEAT, 1, LOCK_KEY, job_id, int(HEARTBEAT_TTL_S * 1000)):
                log.error("the retrain lock no longer names job %s: stopping it", job_id)
                lost.set()
            landed = loop.time()
        except Exception as exc:  # Redis away: the lock lives on until its expiry
            log.warning("retrain heartbeat failed (%s)", type(exc).__name__)
            if loop.time() - landed > HEARTBEAT_TTL_S - HEARTBEAT_S:
                log.error("no heartbeat for %.0f s: the lock may be gone, stopping job %s",
                          loop.time() - landed, job_id)
                lost.set()


async def retrain(ctx: dict[str, Any]) -> dict[str, Any]:
    """The arq job: run one training while the lock names it, mirror its progress, return its final record."""
    settings: RetrainSettings = ctx["retrain_settings"]
    redis = ctx["redis"]
    job_id = str(ctx.get("job_id"))
    if not await redis.eval(CLAIM, 1, LOCK_KEY, job_id, int(HEARTBEAT_TTL_S * 1000)):
        # Cancelled or given up while queued, or handed out again after a killed worker: not ours to run.
        log.warning("job %s does not hold the retrain lock: not run", job_id)
        return {"stage": "skipped", "error": "the job no longer holds the retrain lock"}
    lost = asyncio.Event()
    beating = asyncio.create_task(_heartbeat(redis, job_id, lost), name="retrain-heartbeat")
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
                if lost.is_set():
                    raise LockLost
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.wait(), POLL_S)
                await _mirror(redis, read_progress(progress))
        except asyncio.CancelledError:
            log.info("retraining aborted, stopping pid %d", proc.pid)
            await _stop_group(proc)  # the heartbeat goes on meanwhile: a slow stop is not a dead worker
            await _mirror(redis, {"stage": "cancelled"})
            raise
        except LockLost:
            await _stop_group(proc)
            return {"stage": "failed", "error": "the retrain lock was lost (Redis away too long)"}
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
        beating.cancel()
        progress.unlink(missing_ok=True)
        with contextlib.suppress(Exception):  # only our own lock: a later job's is not ours to drop
            await redis.eval(RELEASE, 1, LOCK_KEY, job_id)


async def _startup(ctx: dict[str, Any]) -> None:
    ctx["retrain_settings"] = RetrainSettings.from_env(os.environ)


def worker_settings(redis_url: str, job_timeout: float = DEFAULT_TIMEOUT_HOURS * 3600) -> dict[str, Any]:
    """arq worker settings: abortable jobs stopped after ``job_timeout`` seconds, JSON records, no retries.

    One job at a time is the launcher's Redis lock (``LOCK_KEY``), not ``max_jobs=1``: with a single
    slot, arq's poll loop waits on that slot and never sees an abort request for the running job. A job
    is tried once: arq would hand a killed worker's job out again a day later (when its in-progress key
    expires), long after the admin moved on.
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
        "max_tries": 1,
        "job_serializer": job_serializer,
        "job_deserializer": job_deserializer,
    }


def build_parser() -> Parser:
    """The command line: no flags, the environment variables listed in --help."""
    parser = Parser("train.worker", __doc__)
    parser.variable("REDIS_URL", text(secret=True), None, "where the jobs come from (required)")
    parser.variable("TRAIN_JOB_TIMEOUT_HOURS", number(low=0.0001, high=24 * 365), DEFAULT_TIMEOUT_HOURS,
                    "hours a job may run before it is stopped like a cancelled one")
    for v in JOB_VARIABLES:
        if v.name != "RETRAIN_MODE":
            parser.variable(v.name, v.kind, None, v.help, shown_default=v.default,
                            dest=f"env_{v.name.lower()}")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m train.worker`` / ``topicspace-trainer-worker``."""
    parser = build_parser()
    args = parser.parse(argv)
    if not args.redis_url:
        parser.error("REDIS_URL must be set: the worker takes its jobs from Redis")
    try:
        from arq.worker import run_worker
    except ImportError:
        parser.error(ARQ_MISSING)
    setup_logging(parser.log_settings(args), env_secrets(parser.env))
    log.info("topicspace %s: trainer worker; jobs are stopped after %g hours (TRAIN_JOB_TIMEOUT_HOURS)",
             __version__, args.train_job_timeout_hours)
    run_worker(worker_settings(args.redis_url, args.train_job_timeout_hours * 3600))


if __name__ == "__main__":
    main()
