"""The one-job-at-a-time lock of the local ``/retrain``: a key in Redis or a file, owned by a token.

The lock is taken once, before the trainer is launched, with ``pid: 0`` (launching) and a random
``token``; once the trainer runs, its holder replaces the info in place (:meth:`JobLock.update`, only
while its token still holds the lock), so there is no moment at which the lock is free while a job runs.
A holder releases only its own lock (by token).

Liveness (:func:`is_stale`): a job's ``pid`` is checked with ``kill(pid, 0)`` (never a pid <= 0: to
``kill`` those name process groups, the caller's own among them). A lock still launching (``pid: 0``)
is live while this process launches it, or while its owner process (same host) lives, and at most
:data:`LAUNCH_GRACE_S` seconds in any case: a bot that died while launching leaves a lock that the next
``/retrain`` drops instead of answering "already running" for ever (7 days with Redis).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Protocol

from space.jobs import HEARTBEAT_TTL_S, LOCK_KEY, LOCK_TTL_S, release_script

# Launching a subprocess takes milliseconds; a launch this old without a pid is a crashed one.
LAUNCH_GRACE_S = 120.0
# Tokens of the launches in flight in this process (their lock holds pid 0 on purpose).
LAUNCHING: set[str] = set()

# Compare-and-set / compare-and-delete on the token, in one Redis step.
_UPDATE = """
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['token'] == ARGV[1] then
  return redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
return false
"""
_RELEASE = release_script("token")


def new_info(progress_file: Path) -> dict[str, Any]:
    """A launching job's lock info: no pid yet, this process as its owner, a fresh token."""
    return {
        "pid": 0,
        "token": uuid.uuid4().hex,
        "owner": os.getpid(),
        "host": socket.gethostname(),
        "progress_file": str(progress_file),
        "started": time.time(),
    }


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists; False for pid <= 0 (process groups, never a job)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def job_pid(info: dict[str, Any] | None) -> int:
    """The job's pid in a lock's info (0 while launching or when unreadable)."""
    try:
        return int((info or {}).get("pid") or 0)
    except (TypeError, ValueError):
        return 0


def is_stale(info: dict[str, Any], now: float | None = None) -> bool:
    """Whether a held lock belongs to no live job (see the module's docstring)."""
    pid = job_pid(info)
    if pid > 0:
        return not alive(pid)
    if info.get("token") in LAUNCHING:
        return False
    now = time.time() if now is None else now
    try:
        started = float(info.get("started") or 0.0)
    except (TypeError, ValueError):
        started = 0.0
    if now - started > LAUNCH_GRACE_S:
        return True
    owner = info.get("owner")
    if isinstance(owner, int) and info.get("host") == socket.gethostname():
        # Our own pid with a token we are not launching: an earlier process of ours (a container restart).
        return owner == os.getpid() or not alive(owner)
    return False


class JobLock(Protocol):
    """Holds the one-job-at-a-time lock and the running job's description."""

    async def acquire(self, info: dict[str, Any]) -> bool:
        """Take the lock with the job's info; False when it is held."""

    async def read(self) -> dict[str, Any] | None:
        """The holder's info, or None."""

    async def update(self, token: str, info: dict[str, Any]) -> bool:
        """Replace the info while ``token`` holds the lock; False when it no longer does."""

    async def release(self, token: str | None = None) -> None:
        """Drop the lock: only while ``token`` holds it, or whoever holds it when ``token`` is None."""


class LockFile:
    """A lock file created with O_EXCL under the models directory (not ``filelock.FileLock``: this one
    holds the job's info and is released by token)."""

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

    async def update(self, token: str, info: dict[str, Any]) -> bool:
        """Replace the info while ``token`` holds the lock (the path exists throughout: os.replace)."""
        held = await self.read()
        if held is None or held.get("token") != token:
            return False
        tmp = self.path.with_name(f"{self.path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(json.dumps(info))
        os.replace(tmp, self.path)
        return True

    async def release(self, token: str | None = None) -> None:
        """Drop the lock (only ``token``'s, when given)."""
        if token is not None:
            held = await self.read()
            if held is not None and held.get("token") != token:
                return
        self.path.unlink(missing_ok=True)


class RedisLock:
    """A lock key in Redis, so a restarted bot still knows about the running job.

    Its calls time out (``timeout_s``) like the bot's other Redis calls: a slow Redis makes /retrain
    answer with an error, never hang a handler.
    """

    def __init__(self, url: str, ttl_s: float = LOCK_TTL_S, timeout_s: float = 5.0) -> None:
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        self.ttl_s = ttl_s

    async def acquire(self, info: dict[str, Any]) -> bool:
        """Take the lock with the job's info; False when it is held."""
        return bool(await self.redis.set(LOCK_KEY, json.dumps(info), nx=True, px=int(self.ttl_s * 1000)))

    async def age_of_beat(self) -> float | None:
        """Seconds since the lock's holder last renewed it for :data:`HEARTBEAT_TTL_S` (None: no lock)."""
        left = int(await self.redis.pttl(LOCK_KEY))
        return None if left < 0 else max(0.0, HEARTBEAT_TTL_S - left / 1000.0)

    async def read(self) -> dict[str, Any] | None:
        """The holder's info, or None."""
        raw = await self.redis.get(LOCK_KEY)
        if not raw:
            return None
        try:
            info = json.loads(raw)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    async def update(self, token: str, info: dict[str, Any]) -> bool:
        """Replace the info while ``token`` holds the lock (its expiry kept)."""
        return bool(await self.redis.eval(_UPDATE, 1, LOCK_KEY, token, json.dumps(info)))

    async def release(self, token: str | None = None) -> None:
        """Drop the lock (only ``token``'s, when given)."""
        if token is None:
            await self.redis.delete(LOCK_KEY)
        else:
            await self.redis.eval(_RELEASE, 1, LOCK_KEY, token)

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()
