"""Two engine processes sharing one Redis: a switch on one replica reaches the other over pub/sub."""

from __future__ import annotations

import os
import re
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
from tests.engine.helpers import TOKEN, get_json, post_admin, publish_copy, stop_and_print
from tests.waiting import until_sync

# The ACTIVE poll is set to an hour below, so any switch within the test came over pub/sub: that, not a
# time bound, is what shows the announcement worked. The deadlines only stop a hung test (CI's 2 cores may
# be busy); how fast an announcement travels is in docs/benchmarks.md (Engine, replicas).
SWITCH_S = 60.0
LOAD_S = 60.0


def _received(url: str) -> float:
    """How many announcements the replica at ``url`` has received."""
    text = urllib.request.urlopen(f"{url}/metrics", timeout=5).read().decode()
    m = re.search(r'^engine_bundle_announcements_total\{direction="received"\} ([\d.]+)$', text, re.MULTILINE)
    return float(m.group(1)) if m else 0.0


def _heard(url: str, before: float) -> float:
    """Wait for one more announcement at ``url``; the seconds it took (printed, never asserted)."""
    started = time.monotonic()
    until_sync(lambda: _received(url) > before, f"an announcement at {url}", SWITCH_S)
    return time.monotonic() - started


def _switch(url: str, version: str, before: float) -> tuple[float, float]:
    """Wait for one more announcement and then ``version`` served; both times."""
    heard = _heard(url, before)
    return heard, heard + _until(f"{url}/healthz", LOAD_S, version=version)


def _until(url: str, timeout: float, **want: object) -> float:
    """Poll ``url`` until its JSON has every ``want`` field; the seconds it took."""
    started = time.monotonic()
    last: dict[str, Any] = {}
    while time.monotonic() - started < timeout:
        try:
            last = get_json(url)
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
            stop_and_print(proc, timeout=20, tail=3000)


def test_switch_on_one_replica_reaches_the_other(models: Path, redis_server: RedisServer) -> None:
    v1 = bundle.active_version(models)
    assert v1 is not None
    v2 = publish_copy(models, models / v1, activate_it=False)
    with _engines(models, redis_server.url, 2) as (a, b):
        for url in (a, b):
            _until(f"{url}/healthz", 60, version=v1, bus_up=True)

        before = _received(b)
        assert post_admin(f"{a}/v1/admin/activate?version={v2}") == {"version": v2, "previous": v1}
        heard, served = _switch(b, v2, before)
        print(f"replica B heard of {v2} {heard:.2f} s and served it {served:.2f} s after A's activate")
        assert bundle.active_version(models) == v2
        assert get_json(f"{b}/v1/related?q=dog&k=3")["version"] == v2

        # Redis goes away: both keep serving; a switch made meanwhile reaches ACTIVE but no subscriber.
        redis_server.stop()
        _until(f"{b}/healthz", LOAD_S, bus_up=False)
        heard_so_far = _received(b)
        assert post_admin(f"{a}/v1/admin/activate?version={v1}") == {"version": v1, "previous": v2}
        assert get_json(f"{b}/v1/related?q=dog&k=3")["version"] == v2
        # Redis comes back: B subscribes again by itself and catches up from ACTIVE (not an announcement).
        redis_server.start()
        for url in (a, b):
            _until(f"{url}/healthz", LOAD_S, bus_up=True, version=v1)
        assert _received(b) == heard_so_far
        # The trainer's helper (what it calls after publishing and activating) reaches both replicas over
        # the new link.
        befores = [_received(url) for url in (a, b)]
        bundle.activate(models, v2)
        assert announce(redis_server.url, v2) == 2
        for url, before in zip((a, b), befores, strict=True):
            _switch(url, v2, before)
        before = _received(b)
        assert post_admin(f"{a}/v1/admin/reload?version={v1}") == {"version": v1, "previous": v2}
        heard, served = _switch(b, v1, before)
        print(f"after the Redis restart, replica B heard of {v1} {heard:.2f} s and served it {served:.2f} s "
              "after A's reload")
        # An unknown version is refused; both keep serving what they serve.
        befores = [_received(url) for url in (a, b)]
        assert announce(redis_server.url, "no-such-version") == 2
        for url, before in zip((a, b), befores, strict=True):
            _heard(url, before)
            assert get_json(f"{url}/healthz")["version"] == v1
        metrics = urllib.request.urlopen(f"{b}/metrics", timeout=5).read().decode()
        assert "engine_bundle_bus_up 1.0" in metrics
        assert 'engine_bundle_announcements_total{direction="received"} 4.0' in metrics


def test_publishing_on_redis_cannot_switch_to_an_arbitrary_bundle(models: Path,
                                                                  redis_server: RedisServer) -> None:
    """Issue 28: any Redis client could switch every replica to any published bundle (an old one, say).
    Now an announcement is followed only to ACTIVE's version or when signed with the admin token."""
    import json

    import redis

    v1 = bundle.active_version(models)
    assert v1 is not None
    old = publish_copy(models, models / v1, activate_it=False)  # published, not active: a rollback target
    client = redis.Redis.from_url(redis_server.url)
    with _engines(models, redis_server.url, 1) as (a,):
        _until(f"{a}/healthz", 60, version=v1, bus_up=True)

        def say(message: Announcement | bytes) -> None:
            before = _received(a)
            client.publish("topicspace:bundle", message if isinstance(message, bytes) else message.encode())
            _heard(a, before)

        now = time.time()
        say(Announcement(old, "attacker"))  # unsigned
        say(Announcement(old, "attacker").signed("a-guessed-token"))  # signed with another key
        say(Announcement(old, "attacker").signed(TOKEN, now=now - 3600))  # a replay of an hour ago
        forged = json.loads(Announcement(old, "x").signed("a-guessed-token").encode())
        say(json.dumps({**forged, "signature": "0" * 64}).encode())
        assert get_json(f"{a}/healthz")["version"] == v1
        say(Announcement(old, "admin").signed(TOKEN))  # what an admin's reload on another replica sends
        _until(f"{a}/healthz", LOAD_S, version=old)
    client.close()


def test_announcement_wire_form_and_no_redis() -> None:
    message = Announcement("20260101-000000000-abcd", "host:1")
    assert Announcement.decode(message.encode()) == message
    signed = message.signed("key", now=1000.0)
    assert Announcement.decode(signed.encode()) == signed
    assert signed.verified("key", now=1100.0) and not signed.verified("other", now=1100.0)
    assert not signed.verified("key", now=2000.0) and not message.verified("key")
    for bad in (b"", b"[]", b"{}", b'{"version": ""}', b'{"version": "../x"}', b"\xff", b'{"version": 3}'):
        assert Announcement.decode(bad) is None, bad
    assert announce_from_env("v", env={}) is None
    dead = f"redis://127.0.0.1:{free_port()}/0"
    assert announce(dead, "v", timeout_s=0.5) == -1  # logged, never raised: the ACTIVE poll is the fallback
