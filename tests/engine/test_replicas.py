"""Two engine processes sharing one Redis: a switch on one replica reaches the other over pub/sub."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from space import bundle
from space.announce import Announcement, announce, announce_from_env
from tests.conftest import ROOT, RedisServer, free_port
from tests.engine.helpers import TOKEN, publish_copy

# The switch must come from pub/sub, not from the ACTIVE poll (set to an hour below).
SWITCH_S = 2.0


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post(url: str) -> dict[str, Any]:
    req = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def _until(url: str, timeout: float, **want: object) -> float:
    """Poll ``url`` until its JSON has every ``want`` field; the seconds it took."""
    started = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        try:
            last = _get(url)
            if all(last.get(k) == v for k, v in want.items()):
                return time.monotonic() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{url} never had {want} within {timeout} s: {last}")


@contextmanager
def _engines(models: Path, redis_url: str, n: int) -> Iterator[list[str]]:
    env = {**os.environ, "REDIS_URL": redis_url, "ENGINE_ADMIN_TOKEN": TOKEN, "LOG_LEVEL": "INFO",
           "ENGINE_REDIS_RETRY_S": "0.3", "PYTHONPATH": str(ROOT)}
    ports = [free_port() for _ in range(n)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "engine", "--models", str(models), "--port", str(port), "--poll", "3600"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for port in ports
    ]
    try:
        yield [f"http://127.0.0.1:{port}" for port in ports]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                out, _ = proc.communicate(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, _ = proc.communicate()
            print(out[-3000:])


def test_switch_on_one_replica_reaches_the_other(models: Path, redis_server: RedisServer) -> None:
    v1 = bundle.active_version(models)
    assert v1 is not None
    v2 = publish_copy(models, models / v1, activate_it=False)
    with _engines(models, redis_server.url, 2) as (a, b):
        for url in (a, b):
            _until(f"{url}/healthz", 60, version=v1, bus_up=True)

        assert _post(f"{a}/v1/admin/activate?version={v2}") == {"version": v2, "previous": v1}
        took = _until(f"{b}/healthz", SWITCH_S, version=v2)
        print(f"replica B served {v2} {took:.2f} s after A's activate")
        assert bundle.active_version(models) == v2
        assert _get(f"{b}/v1/related?q=dog&k=3")["version"] == v2

        # Redis goes away and comes back: both subscriptions come back by themselves.
        redis_server.stop()
        _until(f"{b}/healthz", 10, bus_up=False)
        assert _get(f"{b}/v1/related?q=dog&k=3")["version"] == v2  # still serving meanwhile
        redis_server.start()
        for url in (a, b):
            _until(f"{url}/healthz", 10, bus_up=True)
        assert _post(f"{a}/v1/admin/reload?version={v1}") == {"version": v1, "previous": v2}
        took = _until(f"{b}/healthz", SWITCH_S, version=v1)
        print(f"after the Redis restart, replica B served {v1} {took:.2f} s after A's reload")

        # The trainer's helper (what it calls after publishing) reaches both replicas.
        assert announce(redis_server.url, v2) == 2
        for url in (a, b):
            _until(f"{url}/healthz", SWITCH_S, version=v2)
        # An unknown version is refused; both keep serving what they serve.
        assert announce(redis_server.url, "no-such-version") == 2
        time.sleep(0.3)
        for url in (a, b):
            assert _get(f"{url}/healthz")["version"] == v2
        metrics = urllib.request.urlopen(f"{b}/metrics", timeout=5).read().decode()
        assert "engine_bundle_bus_up 1.0" in metrics
        assert 'engine_bundle_announcements_total{direction="received"} 4.0' in metrics


def test_announcement_wire_form_and_no_redis() -> None:
    message = Announcement("20260101-000000000-abcd", "host:1")
    assert Announcement.decode(message.encode()) == message
    for bad in (b"", b"[]", b"{}", b'{"version": ""}', b'{"version": "../x"}', b"\xff", b'{"version": 3}'):
        assert Announcement.decode(bad) is None, bad
    assert announce_from_env("v", env={}) is None
    dead = f"redis://127.0.0.1:{free_port()}/0"
    assert announce(dead, "v", timeout_s=0.5) == -1  # logged, never raised: the ACTIVE poll is the fallback
