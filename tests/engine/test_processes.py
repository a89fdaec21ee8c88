"""Several engine processes on one port (``--processes``): shared port, summed metrics, switches, restarts."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from space import bundle
from tests.conftest import ROOT, RedisServer, free_port
from tests.engine.helpers import TOKEN, get_json, post_admin, publish_copy, stop_and_print

START_S = 90.0


def _metrics(url: str) -> str:
    return urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()


def _count(text: str, pattern: str) -> float:
    m = re.search(pattern, text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _pids(url: str, want: int = 2, timeout: float = 30.0) -> dict[int, str]:
    """pid → version of the processes answering ``/healthz`` (one new connection per call), polled until
    ``want`` processes answered or ``timeout`` (a process still loading its bundle is not listening yet)."""
    seen: dict[int, str] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        try:
            health = get_json(f"{url}/healthz")
        except OSError:
            time.sleep(0.05)
            continue
        seen[int(health["pid"])] = health["version"]
    return seen


def _until(check: Any, timeout: float, what: str) -> None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout} s: {what}")


@contextmanager
def _engine(
    models: Path, port: int, *args: str, redis_url: str | None = None
) -> Iterator[subprocess.Popen[str]]:
    env = {**os.environ, "ENGINE_ADMIN_TOKEN": TOKEN, "LOG_LEVEL": "INFO", "PYTHONPATH": str(ROOT)}
    env.pop("REDIS_URL", None)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if redis_url:
        env["REDIS_URL"] = redis_url
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--models", str(models), "--port", str(port), *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield proc
    finally:
        stop_and_print(proc)


def _up(url: str) -> None:
    def ok() -> bool:
        try:
            return get_json(f"{url}/healthz")["status"] == "ok"
        except OSError:
            return False
    _until(ok, START_S, f"{url} healthy")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_two_processes_share_the_port_metrics_and_switches(models: Path, redis_server: RedisServer) -> None:
    v1 = bundle.active_version(models)
    assert v1 is not None
    v2 = publish_copy(models, models / v1, activate_it=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _engine(models, port, "--processes", "2", "--poll", "3600", redis_url=redis_server.url) as proc:
        _up(url)
        pids = _pids(url)
        assert len(pids) == 2, f"one process answered every connection: {pids}"
        assert set(pids.values()) == {v1}

        # Requests spread over both processes; /metrics from either one counts them all.
        n = 60
        for i in range(n):
            assert get_json(f"{url}/v1/related?q=dog&k={1 + i % 5}")["words"]
        for _ in range(4):  # several connections: whichever process answers, the same totals
            text = _metrics(url)
            assert _count(text, r'^engine_requests_total\{endpoint="/v1/related",status="200"\} (\S+)$') == n
            hits = _count(text, r'^engine_cache_hits_total\{endpoint="related"\} (\S+)$')
            misses = _count(text, r'^engine_cache_misses_total\{endpoint="related"\} (\S+)$')
            assert hits + misses == n and misses >= 5
            assert text.count('engine_bundle_info{pid="') == 2

        # An activate answered by one process reaches the other (the ACTIVE poll is an hour: over Redis).
        assert post_admin(f"{url}/v1/admin/activate?version={v2}") == {"version": v2, "previous": v1}
        _until(lambda: set(_pids(url, timeout=5).values()) == {v2}, 30, f"both processes on {v2}")
        assert get_json(f"{url}/v1/images?q=dog&k=2")["version"] == v2

        # A process that dies is replaced; the service keeps answering meanwhile.
        victim = next(iter(pids))
        os.kill(victim, signal.SIGKILL)
        # (connections the kernel had queued on its socket die with it: wait until it is gone)
        _until(lambda: not _alive(victim), 10, "the killed process reaped")
        for _ in range(20):
            assert get_json(f"{url}/v1/related?q=beach&k=3")["version"] == v2
        _until(lambda: len(p := _pids(url, timeout=5)) == 2 and victim not in p, 60, "a replacement process")
        assert set(_pids(url).values()) == {v2}

        children = list(_pids(url))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        _until(lambda: not any(_alive(p) for p in children), 10, "engine processes gone after SIGTERM")
        log = proc.stdout.read() if proc.stdout else ""
        assert f"(pid {victim}) exited with code -9" in log
    with socket.socket() as s:  # nobody listens on the port any more (closed connections may linger)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()


def test_without_redis_processes_follow_active(models: Path) -> None:
    v1 = bundle.active_version(models)
    assert v1 is not None
    v2 = publish_copy(models, models / v1, activate_it=False)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _engine(models, port, "--processes", "2", "--poll", "0.2") as proc:
        _up(url)
        assert len(_pids(url)) == 2
        assert post_admin(f"{url}/v1/admin/activate?version={v2}")["version"] == v2
        _until(lambda: set(_pids(url, timeout=5).values()) == {v2}, 30, f"both processes on {v2} via ACTIVE")
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a graceful stop too
        assert proc.wait(timeout=30) == 0


def test_a_taken_port_fails_at_once(models: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with _engine(models, port, "--processes", "2") as proc:
            assert proc.wait(timeout=30) == 1
            out = proc.stdout.read() if proc.stdout else ""
            assert f"error: cannot listen on 127.0.0.1:{port}: address already in use" in out
