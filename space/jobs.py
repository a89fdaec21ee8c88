"""The retraining job's contract, shared by whoever launches it (the bot) and whoever runs it.

The job is `python -m train all` with its settings from ``TRAIN_CORPUS``, ``TRAIN_FORMAT``,
``TRAIN_WEIGHTS``, ``MODELS_DIR`` and ``TRAIN_ARGS`` (docs/architecture.md, "Retraining"); it reports
through the trainer's JSON-lines progress file (``train/progress.py``). Run locally (a subprocess of the
bot) or in the trainer service (an arq job, ``train/worker.py``), the job looks the same to the admin.

In the trainer service the one-job lock (``LOCK_KEY``) names its job (``job_id``, also its ``token``). The
bot takes it for :data:`QUEUED_TTL_S` while the job waits for a worker; the worker claims it (``CLAIM``)
and keeps it alive with a heartbeat (``BEAT``: a beat count, and the key's expiry pushed to
:data:`HEARTBEAT_TTL_S`) until the job ends and it deletes the lock, only while it still names the job
(``RELEASE``). A killed worker's lock so expires within the heartbeat timeout, and a job that finds the
lock naming another job (or none) is not run. Jobs and results cross Redis as JSON
(:func:`job_serializer`), never pickle: whoever can write to Redis must not run code in the bot or worker.
"""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from space.envvars import Kind, Variable, choice, read, text

LOCK_KEY = "topicspace:retrain:lock"
PROGRESS_KEY = "topicspace:retrain:progress"
LOCK_TTL_S = 7 * 24 * 3600
ARQ_MISSING = ("RETRAIN_MODE=arq needs the arq package, which is not installed: "
               "pip install 'topicspace[arq]' (or RETRAIN_MODE=local)")
# The trainer service's job lock: how long a queued job may wait for a worker, how often a running job's
# worker beats, and how long the lock outlives its last beat (a killed worker's lock is gone by then).
QUEUED_TTL_S = 600
HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 15.0

# Lock scripts (KEYS[1] = LOCK_KEY, ARGV[1] = the job id), each one atomic step in Redis.
CLAIM = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local info = cjson.decode(held)
if info['job_id'] ~= ARGV[1] then return 0 end
info['state'] = 'running'
info['beat'] = 0
redis.call('SET', KEYS[1], cjson.encode(info), 'PX', ARGV[2])
return 1
"""
BEAT = """
local held = redis.call('GET', KEYS[1])
if not held then return 0 end
local info = cjson.decode(held)
if info['job_id'] ~= ARGV[1] then return 0 end
info['beat'] = (info['beat'] or 0) + 1
redis.call('SET', KEYS[1], cjson.encode(info), 'PX', ARGV[2])
return 1
"""


def release_script(field: str) -> str:
    """Delete the lock only while its ``field`` (a JSON key of the lock's value) equals ARGV[1]."""
    return f"""
local held = redis.call('GET', KEYS[1])
if held and cjson.decode(held)['{field}'] == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


RELEASE = release_script("job_id")


class JobFailed(Exception):
    """A job's exception as it crossed Redis: its type's name and message only."""


def _plain(value: Any) -> Any:
    if isinstance(value, asyncio.CancelledError):
        return {"__exception__": "CancelledError", "message": ""}
    if isinstance(value, BaseException):
        return {"__exception__": type(value).__name__, "message": str(value)[:1000]}
    raise TypeError(f"{type(value).__name__} does not cross Redis")


def job_serializer(data: dict[str, Any]) -> bytes:
    """arq's job and result records as JSON (exceptions as their name and message)."""
    return json.dumps(data, default=_plain).encode("utf-8")


def _revive(obj: dict[str, Any]) -> Any:
    name = obj.get("__exception__")
    if not isinstance(name, str) or set(obj) != {"__exception__", "message"}:
        return obj
    # Only what arq itself looks for is rebuilt as its own class (an aborted job's result); any other
    # exception is a JobFailed carrying the name: nothing from Redis picks a class to instantiate.
    if name == "CancelledError":
        return asyncio.CancelledError()
    return JobFailed(f"{name}: {obj['message']}")


def job_deserializer(data: bytes) -> dict[str, Any]:
    """The inverse of :func:`job_serializer`; refuses anything that is not a JSON object."""
    value = json.loads(data, object_hook=_revive)
    if not isinstance(value, dict):
        raise ValueError("a job record must be a JSON object")
    return value


@dataclass(frozen=True)
class RetrainSettings:
    """What `/retrain` runs: `python -m train all` with the job's corpus, format, weights and models dir."""

    corpus: str | None = None
    format: str = "flickr8k"
    weights: str | None = None
    models_dir: str | None = None
    extra_args: tuple[str, ...] = ()
    # The command before `--corpus ...`; tests swap in a small script that speaks the progress protocol.
    command: tuple[str, ...] = (sys.executable, "-m", "train", "all")
    redis_url: str | None = None
    # "local": a subprocess of the launcher; "arq": a job for the trainer service (train/worker.py).
    mode: str = "local"

    def argv(self, progress_file: Path) -> list[str]:
        """The full command line of one training job."""
        if not self.corpus or not self.models_dir:
            raise ValueError("TRAIN_CORPUS and MODELS_DIR must be set to retrain")
        argv = [*self.command, "--corpus", self.corpus, "--format", self.format, "--models", self.models_dir]
        if self.weights:
            argv += ["--weights", self.weights]
        return [*argv, *self.extra_args, "--progress-file", str(progress_file)]

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetrainSettings:
        """The job as the environment describes it (``TRAIN_COMMAND`` replaces `python -m train all`)."""

        def get(name: str) -> Any:
            return read(env, name, _JOB_KINDS.get(name, _TEXT))

        command = get("TRAIN_COMMAND")
        return cls(
            corpus=get("TRAIN_CORPUS"),
            format=get("TRAIN_FORMAT") or "flickr8k",
            weights=get("TRAIN_WEIGHTS"),
            models_dir=get("MODELS_DIR"),
            extra_args=tuple(get("TRAIN_ARGS") or ()),
            command=tuple(command) if command else cls.command,
            redis_url=get("REDIS_URL"),
            mode=get("RETRAIN_MODE") or "local",
        )


def _split(raw: str) -> list[str]:
    return shlex.split(raw)  # ValueError on an unclosed quote


_TEXT = text()
_ARGS = Kind("shell-quoted arguments", _split)
_JOB_KINDS = {"TRAIN_FORMAT": choice("flickr8k", "instaloader", "jsonl"), "TRAIN_ARGS": _ARGS,
              "TRAIN_COMMAND": _ARGS, "RETRAIN_MODE": choice("local", "arq")}
# The job's variables, as the launcher's --help lists them.
JOB_VARIABLES = (
    Variable("RETRAIN_MODE", _JOB_KINDS["RETRAIN_MODE"], "local",
             "local: /retrain runs the trainer as a subprocess; arq: a job for the trainer service "
             "(needs the arq extra)"),
    Variable("TRAIN_CORPUS", _TEXT, "unset, /retrain is off", "the corpus /retrain trains on"),
    Variable("TRAIN_FORMAT", _JOB_KINDS["TRAIN_FORMAT"], "flickr8k", "the corpus's format"),
    Variable("TRAIN_WEIGHTS", _TEXT, "unset", "the BVLC GoogLeNet weights folder"),
    Variable("MODELS_DIR", _TEXT, "unset, /retrain is off", "the models folder the engine serves"),
    Variable("TRAIN_ARGS", _ARGS, "empty", "extra `train all` flags, e.g. --quick"),
    Variable("TRAIN_COMMAND", _ARGS, "python -m train all", "replaces the trainer's command (tests)"),
)


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
