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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from bot.settings import RetrainSettings

log = logging.getLogger(__name__)

LOCK_KEY = "topicspace:retrain:lock"
LOCK_TTL_S = 7 * 24 * 3600


class RetrainError(Exception):
    """A retraining cannot be started (not configured, or one is already running)."""


@dataclass(frozen=True)
class RetrainStatus:
    """Where the current (or last) job stands, from its progress file."""

    state: str  # idle | running | done | failed | cancelled
    stage: str = ""
    done: float | None = None
    total: float | None = None
    unit: str = ""
    rate: float | None = None
    elapsed: float | None = None
    eta: float | None = None
    bundle: str | None = None
    version: str | None = None
    error: str | None = None
    pid: int | None = None

    @property
    def finished(self) -> bool:
        """Whether the job has ended (in any way)."""
        return self.state in {"done", "failed", "cancelled"}

    def describe(self) -> str:
        """A short human-readable progress line."""
        if self.state == "idle":
            return "No retraining is running."
        if self.state == "done":
            return f"Retraining done: version {self.version or '?'}."
        if self.state == "failed":
            return f"Retraining failed: {self.error or 'unknown error'}."
        if self.state == "cancelled":
            return "Retraining was cancelled."
        parts = [f"Retraining — stage: {self.stage or 'starting'}"]
        if self.done is not None and self.total:
            parts.append(
                f"{self.done:g}/{self.total:g} {self.unit} ({100 * self.done / self.total:.0f}%)".rstrip()
            )
        if self.rate:
            parts.append(f"{self.rate:.1f} {self.unit or 'items'}/s")
        if self.elapsed is not None:
            parts.append(f"elapsed {_duration(self.elapsed)}")
        if self.eta is not None:
            parts.append(f"ETA {_duration(self.eta)}")
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def read_progress(path: Path) -> dict[str, Any] | None:
    """The last complete JSON line of a progress file (None when there is none yet)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written
        if isinstance(record, dict):
            return record
    return None


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def status_from_record(record: dict[str, Any] | None, running: bool) -> RetrainStatus:
    """Turn a progress record into a status."""
    if record is None:
        return RetrainStatus("running" if running else "idle")
    stage = str(record.get("stage", ""))
    if stage == "done":
        return RetrainStatus("done", stage, bundle=record.get("bundle"), version=record.get("version"))
    if stage == "failed":
        return RetrainStatus("failed", stage, error=str(record.get("error", "")))
    return RetrainStatus(
        "running" if running else "failed",
        stage,
        _num(record.get("done")),
        _num(record.get("total")),
        str(record.get("unit") or ""),
        _num(record.get("rate")),
        _num(record.get("elapsed")),
        _num(record.get("eta")),
        error=None if running else "the training process ended without a result",
    )


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
