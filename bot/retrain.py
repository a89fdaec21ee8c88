"""Runs `python -m train all` as one local subprocess at a time, for the admin `/retrain` command.

One job at a time: a lock in Redis (when ``REDIS_URL`` is set, so it survives a bot restart) or a lock
file under ``MODELS_DIR``. Progress is read from the trainer's JSON-lines progress file.
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
from typing import Any, Protocol

from space.jobs import (
    LOCK_KEY,
    LOCK_TTL_S,
    PROGRESS_KEY,
    RetrainSettings,
    RetrainStatus,
    read_progress,
    status_from_record,
)

log = logging.getLogger(__name__)



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


class JobLock(Protocol):
    """Holds the one-job-at-a-time lock and the running job's description."""

    async def acquire(self, info: dict[str, Any]) -> bool:
        """Take the lock with the job's info; False when it is held."""

    async def read(self) -> dict[str, Any] | None:
        """The holder's info, or None."""

    async def release(self) -> None:
        """Drop the lock."""


class FileLock:
    """A lock file created with O_EXCL under the models directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def acquire(self, info: dict[str, Any]) -> bool:
        """Take the lock with the job's info; False when it is held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        return True

    async def read(self) -> dict[str, Any] | None:
        """The holder's info, or None."""
        try:
            info = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None
        return info if isinstance(info, dict) else None

    async def release(self) -> None:
        """Drop the lock."""
        self.path.unlink(missing_ok=True)


class RedisLock:
    """A lock key in Redis, so a restarted bot still knows about the running job."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url)

    async def acquire(self, info: dict[str, Any]) -> bool:
        """Take the lock with the job's info; False when it is held."""
        return bool(await self.redis.set(LOCK_KEY, json.dumps(info), nx=True, ex=LOCK_TTL_S))

    async def read(self) -> dict[str, Any] | None:
        """The holder's info, or None."""
        raw = await self.redis.get(LOCK_KEY)
        return json.loads(raw) if raw else None

    async def release(self) -> None:
        """Drop the lock."""
        await self.redis.delete(LOCK_KEY)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RetrainManager:
    """Starts, watches and cancels the training subprocess; one job at a time."""

    def __init__(self, settings: RetrainSettings, lock: JobLock | None = None) -> None:
        self.settings = settings
        if lock is None:
            if settings.redis_url:
                lock = RedisLock(settings.redis_url)
            else:
                base = Path(settings.models_dir) if settings.models_dir else Path(tempfile.gettempdir())
                lock = FileLock(base / ".retrain.lock")
        self.lock = lock
        self._proc: asyncio.subprocess.Process | None = None
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
        info = {"pid": 0, "progress_file": str(progress), "started": time.time()}
        if not await self.lock.acquire(info):
            progress.unlink(missing_ok=True)
            raise RetrainError("a retraining is already running")
        try:
            # A new session makes the job its own process group, so cancel() stops its children too.
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            await self.lock.release()
            raise RetrainError(f"could not start the trainer: {exc}") from exc
        await self.lock.release()
        await self.lock.acquire(info | {"pid": self._proc.pid})
        self._cancelled = False
        self._last = RetrainStatus("running", pid=self._proc.pid)
        self._waiter = asyncio.create_task(self._wait(self._proc, progress))
        log.info("retraining started, pid %d", self._proc.pid)
        return self._last

    async def _wait(self, proc: asyncio.subprocess.Process, progress: Path) -> RetrainStatus:
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
        await self.lock.release()
        progress.unlink(missing_ok=True)
        return final

    async def wait(self) -> RetrainStatus:
        """Wait for the current job to end and return its final status."""
        if self._waiter is None:
            return self._last
        return await asyncio.shield(self._waiter)

    async def _drop_stale_lock(self) -> None:
        info = await self.lock.read()
        if info and self._proc is None and not _alive(int(info.get("pid") or 0) or -1):
            log.warning("dropping a stale retrain lock (pid %s)", info.get("pid"))
            await self.lock.release()

    async def status(self) -> RetrainStatus:
        """The running job's progress, or the last job's result, or idle."""
        if self._proc is not None and self._proc.returncode is None:
            held = await self.lock.read() or {}
            record = read_progress(Path(held.get("progress_file", "")))
            return status_from_record(record, running=True)
        if self._proc is None:
            # A job started by an earlier bot process may still be running.
            info = await self.lock.read()
            if info and _alive(int(info.get("pid") or 0) or -1):
                return status_from_record(read_progress(Path(info.get("progress_file", ""))), running=True)
        return self._last

    async def cancel(self) -> bool:
        """Terminate the job's process group; False when nothing was running."""
        info = await self.lock.read()
        pid = self._proc.pid if self._proc is not None and self._proc.returncode is None else None
        if pid is None and info and _alive(int(info.get("pid") or 0) or -1):
            pid = int(info["pid"])
        if pid is None:
            return False
        self._cancelled = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        log.info("retraining cancelled, pid %d", pid)
        if self._waiter is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._waiter), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        else:
            await self.lock.release()
            self._last = RetrainStatus("cancelled")
        return True

    async def close(self) -> None:
        """Release resources (a running job keeps running; its lock stays)."""
        if isinstance(self.lock, RedisLock):
            await self.lock.close()


class ArqRetrainManager:
    """The same interface, but the job runs in the trainer service: queued with arq through Redis.

    The lock is the Redis key the worker deletes when the job ends; progress is the record the worker
    mirrors into ``PROGRESS_KEY``.
    """

    def __init__(self, settings: RetrainSettings, poll_s: float = 1.0) -> None:
        if not settings.redis_url:
            raise RetrainError("RETRAIN_MODE=arq needs REDIS_URL")
        self.settings = settings
        self.poll_s = poll_s
        self.lock = RedisLock(settings.redis_url)
        self._pool: Any = None
        self._last = RetrainStatus("idle")

    async def _arq(self) -> Any:
        if self._pool is None:
            from arq import create_pool
            from arq.connections import RedisSettings

            self._pool = await create_pool(RedisSettings.from_dsn(str(self.settings.redis_url)))
        return self._pool

    async def _job(self) -> Any:
        info = await self.lock.read()
        if not info or not info.get("job_id"):
            return None
        from arq.jobs import Job

        return Job(str(info["job_id"]), await self._arq())

    async def start(self) -> RetrainStatus:
        """Queue a job; raises ``RetrainError`` when one is already queued or running."""
        job_id = f"retrain-{int(time.time() * 1000)}"
        if not await self.lock.acquire({"job_id": job_id, "started": time.time()}):
            raise RetrainError("a retraining is already running")
        await self.lock.redis.delete(PROGRESS_KEY)
        try:
            job = await (await self._arq()).enqueue_job("retrain", _job_id=job_id)
        except Exception as exc:
            await self.lock.release()
            raise RetrainError(f"could not queue the job: {exc}") from exc
        if job is None:
            await self.lock.release()
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

    async def cancel(self) -> bool:
        """Abort the job (the worker stops the trainer's process group); False when none was running."""
        job = await self._job()
        if job is None:
            return False
        aborted = bool(await job.abort(timeout=30))
        await self.lock.release()
        await self.lock.redis.set(PROGRESS_KEY, json.dumps({"stage": "cancelled"}))
        log.info("retraining %s cancelled (abort acknowledged: %s)", job.job_id, aborted)
        return True

    async def close(self) -> None:
        """Close the Redis connections."""
        if self._pool is not None:
            await self._pool.aclose()
        await self.lock.close()


def make_retrain_manager(settings: RetrainSettings) -> RetrainManager | ArqRetrainManager:
    """The manager for ``RETRAIN_MODE``: a local subprocess (default) or the arq trainer service."""
    return ArqRetrainManager(settings) if settings.mode == "arq" else RetrainManager(settings)
