"""``python -m engine`` as a real process: serves, reloads on SIGHUP, stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from space import bundle
from tests.conftest import ROOT, free_port
from tests.engine.helpers import publish_copy


def _get(url: str) -> dict[str, object]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _wait(url: str, version: str | None, timeout: float = 60.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last: dict[str, object] = {}
    while time.monotonic() < deadline:
        try:
            last = _get(url)
            if version is None or last.get("version") == version:
                return last
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} never served {version}: {last}")


def test_main_sighup_and_sigterm(models: Path) -> None:
    port = free_port()
    env = {**os.environ, "ENGINE_ADMIN_TOKEN": "", "LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    # A poll interval of an hour: only SIGHUP can make it reload during the test.
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("topicspace-engine")),  # the command compose runs
            "--models", str(models), "--port", str(port), "--poll", "3600",
        ],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        health = _wait(f"http://127.0.0.1:{port}/healthz", None)
        first = bundle.active_version(models)
        assert health["version"] == first and health["cache"] == "memory"
        related = _get(f"http://127.0.0.1:{port}/v1/related?q=dog&k=3")
        assert len(related["words"]) == 3  # type: ignore[arg-type]
        new = publish_copy(models, models / str(first))
        time.sleep(0.5)
        assert _get(f"http://127.0.0.1:{port}/healthz")["version"] == first
        proc.send_signal(signal.SIGHUP)
        _wait(f"http://127.0.0.1:{port}/healthz", new, timeout=30)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "SIGHUP" in out and f"serving bundle {new}" in out and f"closed bundle {new}" in out
