"""The trainer service's job worker: runs `/retrain` jobs queued through Redis with arq.

In the compose deployment the bot enqueues ``retrain`` (``bot.retrain.ArqRetrainManager``) and this
worker — the only process with torch — runs `python -m train all` as a subprocess, mirroring each
progress record into Redis (``space.jobs.PROGRESS_KEY``) so the bot can edit the admin's message.
An arq abort (``/retrain cancel``) stops the whole process group; the old bundle keeps serving, since
a bundle becomes visible only when the trainer publishes it complete.

Run: ``python -m train.worker`` (console script ``topicspace-trainer-worker``), settings from the
environment: ``REDIS_URL`` and the job variables of ``space.jobs.RetrainSettings``; the job inherits the
worker's environment (``TRAIN_TOPIC``, ``LOG_LEVEL``…) and writes its log to the worker's stdout/stderr.
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
from space.envvars import text
from space.jobs import ARQ_MISSING, JOB_VARIABLES, LOCK_KEY, PROGRESS_KEY, RetrainSettings, read_progress
from space.logs import env_secrets, setup_logging
from space.version import __version__

log = logging.getLogger(__name__)

POLL_S = 1.0
RECORD_TTL_S = 7 * 24 * 3600


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


def worker_settings(redis_url: str) -> dict[str, Any]:
    """arq worker settings: abortable jobs, no time limit short of a day.

    One job at a time is the launcher's Redis lock (``LOCK_KEY``), not ``max_jobs=1``: with a single
    slot, arq's poll loop waits on that slot and never sees an abort request for the running job.
    """
    from arq.connections import RedisSettings

    return {
        "functions": [retrain],
        "on_startup": _startup,
        "redis_settings": RedisSettings.from_dsn(redis_url),
        "max_jobs": 2,
        "job_timeout": 24 * 3600,
        "allow_abort_jobs": True,
        "keep_result": 7 * 24 * 3600,
    }


def build_parser() -> Parser:
    """The command line: no flags, the environment variables listed in --help."""
    parser = Parser("train.worker", __doc__)
    parser.variable("REDIS_URL", text(secret=True), None, "where the jobs come from (required)")
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
    log.info("topicspace %s: trainer worker", __version__)
    run_worker(worker_settings(args.redis_url))


if __name__ == "__main__":
    main()
