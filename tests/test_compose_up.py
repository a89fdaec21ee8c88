"""``docker compose up`` as close as this machine gets: each service's command from docker-compose.yml run
as a real process with the environment compose would give it from an operator's ``.env``
(tests/compose_local.py): Redis with its password, the engine (two processes, metrics on the internal
port), the bot against the local Bot API, the trainer worker. They come up healthy together on a first
deploy (no bundle: alive, not ready), an admin's /retrain goes through the trainer service and makes one,
and the engine and bot then serve it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from bot.local_api import LocalBotApi
from bot.messages import EN, text
from tests.compose_local import ComposeError, LocalCompose, interpolate
from tests.conftest import ROOT

TOKEN = "123456:COMPOSE-token-s3cr3t"
ADMIN_ID = 42
USER_ID = 1001
STAND_IN = ROOT / "tests" / "compose_stand_in.py"


async def _get(url: str) -> tuple[int, str]:
    def fetch() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    return await asyncio.get_running_loop().run_in_executor(None, fetch)


async def _ready(engine: str, timeout: float = 60) -> str:
    """Wait until /readyz answers 200 several times running (each engine process has loaded the bundle)."""
    loop = asyncio.get_running_loop()
    deadline, streak, body = loop.time() + timeout, 0, ""
    while streak < 6:
        status, body = await _get(f"{engine}/readyz")
        streak = streak + 1 if status == 200 else 0
        assert loop.time() < deadline, f"/readyz never stayed 200: {status} {body}"
        await asyncio.sleep(0.1)
    return str(json.loads(body)["version"])


async def _redis(up: LocalCompose, service: str, *args: str) -> str:
    """redis-cli against one of the compose project's Redis servers, with the password."""
    proc = await asyncio.create_subprocess_exec(
        "redis-cli", "-p", str(up.ports[service]), *args, stdout=asyncio.subprocess.PIPE,
        env={"PATH": os.environ["PATH"], "REDISCLI_AUTH": up.dotenv["REDIS_PASSWORD"]})
    return (await proc.communicate())[0].decode()


def _dotenv(api: LocalBotApi, small_bundle: Path) -> dict[str, str]:
    """What an operator puts in .env (the rest keeps .env.example's defaults)."""
    return {
        "REDIS_PASSWORD": "Compose5ecretPw",
        "TELEGRAM_TOKEN": TOKEN,
        "TELEGRAM_API_URL": api.url,  # the local Bot API stands in for api.telegram.org
        "ADMIN_IDS": str(ADMIN_ID),
        "ENGINE_ADMIN_TOKEN": "compose-admin-token",
        "TRAIN_ARGS": "--quick",
        "TRAIN_TOPIC": "/app/topics/barcelona.toml",
        # The trainer's stand-in: publishes a copy of the small bundle instead of training for minutes.
        "TRAIN_COMMAND": f"{sys.executable} {STAND_IN} --from-bundle {small_bundle}",
    }


async def test_the_compose_services_come_up_healthy_together(tmp_path: Path, small_bundle: Path,
                                                             weights_dir: Path) -> None:
    api = LocalBotApi(TOKEN)
    await api.start()
    (tmp_path / "models").mkdir()
    (tmp_path / "corpus").mkdir()
    mounts = {"/models": tmp_path / "models", "/corpus": tmp_path / "corpus", "/weights": weights_dir}
    up = LocalCompose(_dotenv(api, small_bundle), tmp_path, mounts)
    engine = f"http://127.0.0.1:{up.ports['engine']}"
    try:
        for service in ("redis", "redis-cache"):
            await up.start(service)
        for service in ("redis", "redis-cache"):
            await up.wait_healthy(service)
        await up.start("engine")  # depends_on: both redis healthy
        await up.wait_healthy("engine")
        # A first deploy: alive but not ready; /metrics only on the internal port.
        assert (await _get(f"{engine}/healthz"))[0] == 200
        status, body = await _get(f"{engine}/readyz")
        assert status == 503 and json.loads(body)["error"] == "no_bundle"
        assert (await _get(f"{engine}/metrics"))[0] == 404
        status, body = await _get(f"http://127.0.0.1:{up.ports['metrics']}/metrics")
        assert status == 200 and "engine_requests_total" in body
        # The admin endpoints are on the internal port only, too (the bot calls them there, below).
        assert (await _get(f"{engine}/v1/admin/versions"))[0] == 404
        await up.start("bot")  # depends_on: engine healthy, which it is without a bundle
        await up.start("trainer")
        await api.wait_for("setMyCommands", timeout=90)
        n = len(api.calls)
        await api.push(api.text_update("/related dog", user_id=USER_ID))
        await api.wait_for("sendMessage", lambda c: c.text == text(EN, "no_model"), after=n, timeout=30)
        # The admin's /retrain: queued by the bot, run by the trainer service, published into "models".
        n = len(api.calls)
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        done = await api.wait_for("editMessageText", lambda c: "Retraining done" in c.params.get("text", ""),
                                  after=n, timeout=120)
        assert await _ready(engine) in done.params["text"]
        # The bot reached the admin reload on the engine's internal port (ENGINE_ADMIN_URL).
        assert "did not reload" not in done.params["text"], done.params["text"]
        n = len(api.calls)
        await api.push(api.text_update("/related dog", user_id=USER_ID))
        await api.wait_for("sendMessage", lambda c: "Words near «dog»" in c.text, after=n, timeout=30)
        # The job ran with the compose settings, and its output is in the trainer service's log.
        trainer_log = up.log("trainer")
        assert "stand-in trainer: published" in trainer_log, trainer_log[-3000:]
        assert f"TRAIN_TOPIC={ROOT / 'topics' / 'barcelona.toml'}" in trainer_log
        assert "'--quick'" in trainer_log
        for service in ("redis", "redis-cache", "engine", "bot", "trainer"):
            assert up.procs[service].returncode is None, (service, up.log(service)[-3000:])
        assert TOKEN not in up.log("bot") and "Compose5ecretPw" not in up.log("bot") + up.log("engine")
        for service in ("redis", "redis-cache"):
            # Redis really wants its password, and it is on no command line.
            plain = await asyncio.create_subprocess_exec("redis-cli", "-p", str(up.ports[service]), "ping",
                                                         stdout=asyncio.subprocess.PIPE)
            assert b"NOAUTH" in (await plain.communicate())[0]
            cmdline = Path(f"/proc/{up.procs[service].pid}/cmdline").read_bytes()
            assert b"redis-server" in cmdline and b"Compose5ecretPw" not in cmdline, cmdline
        # The engine's answers are cached in the evicting cache Redis, never in the Redis of state and jobs.
        cached = await _redis(up, "redis-cache", "--scan", "--pattern", "topicspace:engine:*")
        assert cached.split(), "no answer in the cache Redis"
        assert not (await _redis(up, "redis", "--scan", "--pattern", "topicspace:engine:*")).split()
        assert "allkeys-lru" in await _redis(up, "redis-cache", "config", "get", "maxmemory-policy")
        assert "noeviction" in await _redis(up, "redis", "config", "get", "maxmemory-policy")
        # A bot whose .env has no token: one clear line and a failure status, not a silent restart loop.
        code, out = await up.run_once("bot", {**up.dotenv, "TELEGRAM_TOKEN": ""})
        assert code == 2 and out.strip().splitlines() == [out.strip()] and "TELEGRAM_TOKEN is not set" in out
    finally:
        await up.down()
        await api.stop()


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET}-${EMPTY}-${UNSET}", env) == "x--"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}|${UNSET:-d}", env) == "d||d|d"
    assert interpolate("$${SET} costs $$5", env) == "${SET} costs $5"
    with pytest.raises(ComposeError, match="REDIS_PASSWORD"):
        interpolate("${REDIS_PASSWORD:?set REDIS_PASSWORD in .env}", env)


def test_compose_refuses_to_start_without_a_redis_password(tmp_path: Path) -> None:
    up = LocalCompose({}, tmp_path, {})
    for service in ("redis", "redis-cache"):
        with pytest.raises(ComposeError, match="REDIS_PASSWORD"):
            up.environment(service)
    env: dict[str, Any] = up.environment("engine", {"REDIS_PASSWORD": "pw"})
    assert env["REDIS_URL"] == f"redis://:pw@127.0.0.1:{up.ports['redis']}/0"
