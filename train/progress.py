"""Progress of a training run: a tqdm bar on the terminal and JSON lines for the bot's /retrain.

Each line appended to the progress file (flushed at once) is
``{"stage", "done", "total", "unit", "rate", "elapsed", "eta"}``, at most about one per second per stage
plus every stage's start and end; a run ends with ``{"stage": "done", "bundle", "version", "elapsed"}``
or ``{"stage": "failed", "error", "elapsed"}``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

# What every stage function takes as ``progress``: (stage, done, total or None, unit).
ProgressCallback = Callable[[str, int, int | None, str], None]


def throttled(progress: ProgressCallback | None, interval: float = 0.5) -> ProgressCallback | None:
    """Wrap ``progress`` so it fires at most every ``interval`` seconds (and always on completion)."""
    if progress is None:
        return None
    last = [0.0]

    def call(stage: str, done: int, total: int | None, unit: str) -> None:
        now = time.monotonic()
        if now - last[0] >= interval or (total is not None and done >= total):
            last[0] = now
            progress(stage, done, total, unit)

    return call


class ProgressReporter:
    """Collects per-stage progress, mirrors it to tqdm and (optionally) to a JSON-lines file."""

    def __init__(self, path: Path | None = None, *, bars: bool = True, min_interval_s: float = 1.0) -> None:
        self.path = path
        self.bars = bars
        self.min_interval_s = min_interval_s
        self.t0 = time.monotonic()
        self._file: IO[str] | None = None
        self._stage: str | None = None
        self._stage_t0 = 0.0
        self._last_emit = 0.0
        self._bar: tqdm[Any] | None = None
        self._done = 0
        self._base = 0  # units already done when the stage started (a resumed stage): not in its rate
        self._total: int | None = None
        self._unit = "items"
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a", encoding="utf-8")

    def elapsed(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def _write(self, payload: dict[str, Any]) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(payload, ensure_ascii=False) + "\n")
        self._file.flush()

    def _line(self) -> dict[str, Any]:
        spent = time.monotonic() - self._stage_t0
        rate = (self._done - self._base) / spent if spent > 0 and self._done > self._base else None
        eta = None
        if rate and self._total is not None:
            eta = round(max(0.0, (self._total - self._done) / rate), 2)
        return {
            "stage": self._stage,
            "done": self._done,
            "total": self._total,
            "unit": self._unit,
            "rate": round(rate, 3) if rate else None,
            "elapsed": round(self.elapsed(), 3),
            "eta": eta,
        }

    def start(self, stage: str, total: int | None = None, unit: str = "items", done: int = 0) -> None:
        """Begin ``stage`` (ending any stage still open); ``done``: units a resumed stage already has."""
        if self._stage is not None:
            self.end()
        self._stage, self._total, self._unit, self._done, self._base = stage, total, unit, done, done
        self._stage_t0 = time.monotonic()
        self._last_emit = self._stage_t0
        if self.bars:
            self._bar = tqdm(total=total, initial=done, unit=unit, desc=stage, leave=False)
        self._write(self._line())

    def update(self, done: int, total: int | None = None) -> None:
        """Report ``done`` units of the current stage (absolute, not an increment)."""
        if self._stage is None:
            return
        if total is not None:
            self._total = total
            if self._bar is not None:
                self._bar.total = total
        if self._bar is not None:
            self._bar.update(max(0, done - self._done))
        self._done = done
        now = time.monotonic()
        if now - self._last_emit >= self.min_interval_s:
            self._last_emit = now
            self._write(self._line())

    @contextmanager
    def phase(self, stage: str) -> Iterator[None]:
        """Run the block as ``stage`` (no count): started before it, ended after it (a failure is reported by
        :meth:`failed`, which ends it)."""
        self.start(stage)
        yield
        self.end()

    def advance(self, n: int = 1) -> None:
        """Add ``n`` units to the current stage."""
        self.update(self._done + n)

    def end(self) -> None:
        """Close the current stage with a final line."""
        if self._stage is None:
            return
        self._write(self._line())
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        self._stage = None

    def callback(self, stage: str, done: int, total: int | None, unit: str) -> None:
        """The ``progress`` callback handed to other stages' functions: (stage, done, total, unit)."""
        if stage != self._stage:
            self.start(stage, total, unit, done)  # a stage's first report may count work done before
        self._unit = unit
        self.update(done, total)

    def finished(self, bundle: Path, version: str) -> None:
        """The run's last line on success."""
        self.end()
        self._write(
            {"stage": "done", "bundle": str(bundle), "version": version, "elapsed": round(self.elapsed(), 3)}
        )
        self.close()

    def failed(self, error: str) -> None:
        """The run's last line on failure (one-line message)."""
        self.end()
        one_line = " ".join(error.split())
        self._write({"stage": "failed", "error": one_line, "elapsed": round(self.elapsed(), 3)})
        self.close()

    def close(self) -> None:
        """Close the file (idempotent)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._file is not None:
            self._file.close()
            self._file = None
