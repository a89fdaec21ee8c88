"""Shared by the scripts that start an engine (screenshots, bench_page, fuzz_api, bench_cache_flood,
bench_upload_memory): waiting for it to serve, and Debian's chromium.

The engine runs as ``python -m engine --models DIR`` on a free loopback port (in-process cache, its
defaults otherwise); the browser is ``/usr/bin/chromium`` (``apt-get install chromium``; scripts/setup.sh
installs it as root) driven by playwright, which never downloads a browser of its own here.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def wait_ready(url: str, proc: subprocess.Popen[Any], timeout: float = 180) -> None:
    """Return once the engine at ``url`` answers /readyz 200; SystemExit if it exits or takes too long."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the engine exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the engine at {url} was not ready within {timeout:.0f} s")
        time.sleep(0.2)


@contextlib.contextmanager
def engine(models: Path, *extra: str, timeout: float = 120) -> Iterator[str]:
    """``python -m engine`` on ``models``; yields its base URL once it serves a bundle."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_") and k != "REDIS_URL"}
    env.setdefault("LOG_LEVEL", "WARNING")
    proc = subprocess.Popen([sys.executable, "-m", "engine", "--models", str(models), "--port", str(port),
                             *extra], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, timeout)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless chromium browser (playwright's sync API)."""
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, _, value = line.rpartition(" ")
            fields = dict(part.split("=", 1) for part in labels[len(name) + 1:-1].split(","))
            out.append(({k: v.strip('"') for k, v in fields.items()}, float(value)))
    return out


def request_counts(url: str) -> dict[tuple[str, str], float]:
    """The engine's ``engine_requests_total`` samples, (endpoint, status) → count, and its time spent
    answering (the sum of ``engine_request_seconds`` over every endpoint but /metrics) under ("", "s")."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    counts: dict[tuple[str, str], float] = {}
    for fields, value in _samples(text, "engine_requests_total"):
        key = (fields["endpoint"], fields["status"])
        counts[key] = counts.get(key, 0.0) + value
    spent = _samples(text, "engine_request_seconds_sum")
    counts[("", "s")] = sum(v for fields, v in spent if fields["endpoint"] != "/metrics")
    return counts
