"""Bot test fixtures: the real engine on the small bundle, the local Bot API server, and a running bot."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from bot.app import build_application, running
from bot.local_api import LocalBotApi
from bot.settings import BotSettings
from tests.conftest import free_port

TOKEN = "123456:TEST-token-s3cr3t-ABCdef"
ADMIN_ID = 42
ENGINE_ADMIN_TOKEN = "engine-admin-secret"
ROOT = Path(__file__).resolve().parents[2]


def _wait_http(url: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 60.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the engine exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@pytest.fixture(scope="session")
def engine_url(small_bundle_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real engine (``python -m engine``) serving the small bundle, shared by the bot tests."""
    port = free_port()
    log = (tmp_path_factory.mktemp("engine-log") / "engine.log").open("wb")
    env = {**os.environ, "ENGINE_ADMIN_TOKEN": ENGINE_ADMIN_TOKEN, "ENGINE_WORKERS": "1"}
    env.pop("REDIS_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine", "--models", str(small_bundle_models), "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_http(f"{url}/v1/stats", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class InProcessEngine:
    """The real engine app in this event loop, on a fixed port, which a test may stop and start again."""

    def __init__(self, models: Path) -> None:
        self.models = models
        self.port = free_port()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        from engine.app import create_app
        from engine.settings import Settings

        settings = Settings(models_dir=self.models, port=self.port, workers=1, admin_token=ENGINE_ADMIN_TOKEN)
        app = create_app(settings)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None


@pytest.fixture
async def own_engine(small_bundle_models: Path) -> AsyncIterator[InProcessEngine]:
    """An engine this test owns (to stop it)."""
    engine = InProcessEngine(small_bundle_models)
    await engine.start()
    yield engine
    await engine.stop()


@pytest.fixture
async def api() -> AsyncIterator[LocalBotApi]:
    """The local Bot API server the bot talks to."""
    server = LocalBotApi(TOKEN)
    await server.start()
    yield server
    await server.stop()


def bot_settings(api: LocalBotApi, engine_url: str, **changes: object) -> BotSettings:
    """Settings pointing the bot at the local Bot API and an engine."""
    base = BotSettings(
        token=TOKEN,
        engine_url=engine_url,
        engine_public_url="https://engine.example.org",
        engine_admin_token=ENGINE_ADMIN_TOKEN,
        admin_ids=frozenset({ADMIN_ID}),
        telegram_api_url=api.url,
        engine_timeout_s=5.0,
        user_rate_per_minute=600,
        user_burst=50,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


@pytest.fixture
async def bot(api: LocalBotApi, engine_url: str) -> AsyncIterator[LocalBotApi]:
    """A running bot (long polling the local API) on the shared real engine; yields the API to drive it."""
    application = build_application(bot_settings(api, engine_url))
    async with running(application):
        yield api


async def engine_json(engine_url: str, path: str, **params: object) -> Any:
    """Ask the engine directly (to compare the bot's answer with the engine's)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{engine_url}{path}", params={k: str(v) for k, v in params.items()}) as resp,
    ):
        return await resp.json()


def flickr_jpg(flickr8k_dir: Path, index: int = 0) -> bytes:
    """The bytes of a real Flickr8k photo."""
    return sorted((flickr8k_dir / "images").glob("*.jpg"))[index].read_bytes()
