"""Runs `python -m train all` as one local subprocess at a time, for the admin `/retrain` command.

One job at a time: a lock in Redis (when ``REDIS_URL`` is set, so it survives a bot restart) or a lock
file under ``MODELS_DIR`` (:mod:`bot.joblock`: taken once before the launch, never free while a job
runs). Progress is read from the trainer's JSON-lines progress file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from bot.joblock import LAUNCHING, JobLock, LockFile, RedisLock, is_stale, job_pid, new_info
from space.jobs import (
    HEARTBEAT_S,
    PROGRESS_KEY,
    QUEUED_TTL_S,
    RetrainSettings,
    RetrainStatus,
    job_deserializer,
    job_serializer,
    read_progress,
    status_from_record,
)

log = logging.getLogger(__name__)

# How long ``cancel`` waits for a job being launched to get its pid.
CANCEL_LAUNCH_WAIT_S = 10.0
# How long an arq cancel waits for the worker to acknowledge the abort (it stops the trainer first).
ABORT_WAIT_S = 30.0
# A running job's lock not renewed for this long belongs to a dead worker (it beats every HEARTBEAT_S).
DEAD_AFTER_S = 3 * HEARTBEAT_S

__all__ = [
    "ArqRetrainManager",
    "RetrainError",
    "RetrainManager",
    "RetrainStatus",
    "make_retrain_manager",
    "read_progress",
    "status_from_record",
]


class RetrainError(Exception):
    """A retraining cannot be started (not configured, or one is already running)."""


class RetrainManager:
    """Starts, watches and cancels the training subprocess; one job at a time."""

    def __init__(self, settings: RetrainSettings, lock: JobLock | None = None) -> None:
        self.settings = settings
        if lock is None:
            if settings.redis_url:
                lock = RedisLock(settings.redis_url)
            else:
                base = Path(settings.models_dir) if settings.models_dir else Path(tempfile.gettempdir())
                lock = LockFile(base / ".retrain.lock")
        self.lock = lock
        self._proc: asyncio.subprocess.Process | None = None
        self._token: str | None = None
        self._waiter: asyncio.Task[RetrainStatus] | None = None
        self._last: RetrainStatus = RetrainStatus("idle")
        self._cancelled = False

    async def start(self) -> RetrainStatus:
        """Start a job; raises ``RetrainError`` when not configured or one is already running."""
        await self._drop_stale_lock()
        progress = Path(tempfile.mkstemp(prefix="retrain-", suffix=".jsonl")[1])
        try:
            argv = self.settings.argv(progress)
        except ValueError as exc:
            progress.unlink(missing_ok=True)
            raise RetrainError(str(exc)) from exc
        info = new_info(progress)
        token = str(info["token"])
        LAUNCHING.add(token)
        try:
            if not await self.lock.acquire(info):
                progress.unlink(missing_ok=True)
                raise RetrainError("a retraining is already running")
            proc = await self._launch(argv, token, progress)
            # The same lock, now naming the job: it is never free while the job runs.
            if not await self.lock.update(token, info | {"pid": proc.pid}):
                self._stop_group(proc.pid, signal.SIGTERM)
                await proc.wait()
                progress.unlink(missing_ok=True)
                raise RetrainError("the retrain lock was taken away while the trainer started")
        finally:
            LAUNCHING.discard(token)
        self._proc, self._token, self._cancelled = proc, token, False
        self._last = RetrainStatus("running", pid=proc.pid)
        self._waiter = asyncio.create_task(self._wait(proc, progress, token))
        log.info("retraining started, pid %d", proc.pid)
        return self._last

    async def _launch(self, argv: list[str], token: str, progress: Path) -> asyncio.subprocess.Process:
        """Start the trainer in its own session (cancel() stops its children too); the lock is ours."""
        try:
            return await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except BaseException as exc:
            await self.lock.release(token)
            progress.unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise RetrainError(f"could not start the trainer: {exc}") from exc
            raise

    @staticmethod
    def _stop_group(pid: int, sig: signal.Signals) -> None:
        """Signal the job's process group; never a pid <= 0 (the caller's own group, or every process)."""
        if pid <= 0:
            raise ValueError(f"refusing to signal process group {pid}")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)

    async def _wait(self, proc: asyncio.subprocess.Process, progress: Path, token: str) -> RetrainStatus:
        assert proc.stderr is not None
        # Keep only the tail: a long run's progress bars would otherwise pile up in memory.
        tail = b""
        while chunk := await proc.stderr.read(1 << 16):
            tail = (tail + chunk)[-4096:]
        code = await proc.wait()
        final = status_from_record(read_progress(progress), running=False)
        if self._cancelled:
            final = RetrainStatus("cancelled")
        elif final.state != "done" and code != 0:
            lines = tail.decode(errors="replace").replace("\r", "\n").strip().splitlines()
            reason = final.error if final.state == "failed" and final.error else None
            final = RetrainStatus(
                "failed", final.stage, error=reason or (lines[-1] if lines else f"exit code {code}")[:300]
            )
        log.info("retraining ended: %s (exit code %d)", final.state, code)
        self._last = final
        await self.lock.release(token)
        progress.unlink(missing_ok=True)
        return final

    async def wait(self) -> RetrainStatus:
        """Wait for the current job to end and return its final status."""
        if self._waiter is None:
            return self._last
        return await asyncio.shield(self._waiter)

    async def _drop_stale_lock(self) -> None:
        info = await self.lock.read()
        if info and is_stale(info):
            log.warning("dropping a stale retrain lock (pid %s)", info.get("pid"))
            await self.lock.release(info.get("token"))

    def _running_here(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def status(self) -> RetrainStatus:
        """The running job's progress, or the last job's result, or idle."""
        info = await self.lock.read()
        if self._running_here() or (self._proc is None and info and not is_stale(info)):
            # Ours, or a job started (or being started) by an earlier or another bot process.
            progress = Path((info or {}).get("progress_file", ""))
            return status_from_record(read_progress(progress), running=True)
        return self._last

    async def _job_pid(self) -> int | None:
        """The running job's pid; a job being launched is waited for (a bounded wait) to get its pid."""
        deadline = time.monotonic() + CANCEL_LAUNCH_WAIT_S
        while True:
            if self._running_here():
                assert self._proc is not None
                return self._proc.pid
            info = await self.lock.read()
            if not info or is_stale(info):
                return None
            if (pid := job_pid(info)) > 0 and info.get("token") not in LAUNCHING:
                return pid
            if time.monotonic() > deadline:
                log.warning("a retraining still launching after %.0f s: not cancelled", CANCEL_LAUNCH_WAIT_S)
                return None
            await asyncio.sleep(0.05)

    async def cancel(self) -> bool:
        """Terminate the job's process group; False when nothing was running."""
        pid = await self._job_pid()
        if pid is None:
            return False
        ours = self._running_here()
        self._cancelled = True
        self._stop_group(pid, signal.SIGTERM)
        log.info("retraining cancelled, pid %d", pid)
        if ours and self._waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), 10)
            except TimeoutError:
                self._stop_group(pid, signal.SIGKILL)
        else:
            # Another bot process's job (before a restart): its lock is released here.
            held = await self.lock.read()
            if held and job_pid(held) == pid:
                await self.lock.release(held.get("token"))
            self._last = RetrainStatus("cancelled")
        return True

    async def close(self) -> None:
        """Release resources (a running job keeps running; its lock stays)."""
        if isinstance(self.lock, RedisLock):
            await self.lock.close()


class ArqRetrainManager:
    """The same interface, but the job runs in the trainer service: queued with arq through Redis.

    The lock names the job (``space.jobs``): taken here for ``QUEUED_TTL_S`` while the job waits, then
    claimed and kept alive by the worker's heartbeat, deleted by the worker when the job ends. Progress is
    the record the worker mirrors into ``PROGRESS_KEY``. Jobs and results are JSON both ways.
    """

    def __init__(self, settings: RetrainSettings, poll_s: float = 1.0) -> None:
        if not settings.redis_url:
            raise RetrainError("RETRAIN_MODE=arq needs REDIS_URL")
        self.settings = settings
        self.poll_s = poll_s
        self.lock = RedisLock(settings.redis_url, ttl_s=QUEUED_TTL_S)
        self._pool: Any = None
        self._last = RetrainStatus("idle")

    async def _arq(self) -> Any:
        if self._pool is None:
            from arq import create_pool
            from arq.connections import RedisSettings

            self._pool = await create_pool(RedisSettings.from_dsn(str(self.settings.redis_url)),
                                           job_serializer=job_serializer, job_deserializer=job_deserializer)
        return self._pool

    async def _job(self, info: dict[str, Any] | None) -> Any:
        if not info or not info.get("job_id"):
            return None
        from arq.jobs import Job

        return Job(str(info["job_id"]), await self._arq(), _deserializer=job_deserializer)

    async def start(self) -> RetrainStatus:
        """Queue a job; raises ``RetrainError`` when one is already queued or running."""
        job_id = f"retrain-{int(time.time() * 1000)}"
        info = {"job_id": job_id, "token": job_id, "state": "queued", "started": time.time()}
        if not await self.lock.acquire(info):
            raise RetrainError("a retraining is already running")
        await self.lock.redis.delete(PROGRESS_KEY)
        try:
            job = await (await self._arq()).enqueue_job("retrain", _job_id=job_id)
        except Exception as exc:
            await self.lock.release(job_id)
            raise RetrainError(f"could not queue the job: {exc}") from exc
        if job is None:
            await self.lock.release(job_id)
            raise RetrainError("a job with this id exists already")
        log.info("retraining queued as %s", job_id)
        self._last = RetrainStatus("running")
        return self._last

    async def status(self) -> RetrainStatus:
        """The queued or running job's progress, or the last job's result, or idle."""
        raw = await self.lock.redis.get(PROGRESS_KEY)
        record = json.loads(raw) if raw else None
        running = await self.lock.read() is not None
        if record is not None and record.get("stage") == "cancelled":
            return RetrainStatus("cancelled")
        if record is None:
            return RetrainStatus("running") if running else self._last
        return status_from_record(record, running=running and record.get("stage") not in {"done", "failed"})

    async def wait(self) -> RetrainStatus:
        """Poll until the job has ended; return its final status."""
        while True:
            status = await self.status()
            if status.finished or (status.state == "idle" and await self.lock.read() is None):
                self._last = status
                return status
            await asyncio.sleep(self.poll_s)

    async def _dead(self, info: dict[str, Any]) -> bool:
        """Whether no worker runs the locked job: still queued, or its heartbeat stopped."""
        if info.get("state") != "running":
            return True
        age = await self.lock.age_of_beat()
        return age is None or age > DEAD_AFTER_S

    async def cancel(self) -> bool:
        """Abort the job (the worker stops the trainer's process group); False when none was running.

        The abort is marked in arq (a worker never starts an aborted job, and stops a running one), then the
        lock decides: gone means the worker stopped the trainer and released it; a job no live worker runs
        (still queued, or its heartbeat stopped: a killed worker) has its lock released here, at once or as
        soon as the heartbeat is :data:`DEAD_AFTER_S` old. A live worker's lock is never taken from it, so
        two trainings never overlap; after ``ABORT_WAIT_S`` the job is left stopping.
        """
        info = await self.lock.read()
        job = await self._job(info)
        if job is None:
            return False
        assert info is not None
        job_id = str(info["job_id"])
        try:
            await job.abort(timeout=0.0)  # the mark only: the lock, below, says when the job has stopped
        except TimeoutError:
            pass
        except Exception as exc:  # e.g. a result record arq cannot read: the lock still decides
            log.warning("abort of retraining %s: %s", job_id, type(exc).__name__)
        deadline = time.monotonic() + ABORT_WAIT_S
        while True:
            held = await self.lock.read()
            if held is None or held.get("job_id") != job_id:
                stopped = True
                break
            if await self._dead(held):
                await self.lock.release(job_id)
                stopped = True
                break
            if time.monotonic() > deadline:
                stopped = False
                break
            await asyncio.sleep(self.poll_s / 5)
        if stopped:
            await self.lock.redis.set(PROGRESS_KEY, json.dumps({"stage": "cancelled"}))
        log.info("retraining %s cancelled (stopped: %s)", job_id, stopped)
        return True

    async def close(self) -> None:
        """Close the Redis connections."""
        if self._pool is not None:
            await self._pool.aclose()
        await self.lock.close()


def make_retrain_manager(settings: RetrainSettings) -> RetrainManager | ArqRetrainManager:
    """The manager for ``RETRAIN_MODE``: a local subprocess (default) or the arq trainer service."""
    return ArqRetrainManager(settings) if settings.mode == "arq" else RetrainManager(settings)
