"""/retrain end to end: the real bot, the real engine, the real trainer as a subprocess on real images.

One run retrains with the small bundle's own settings (its stage cache copied, so unchanged stages are
skipped as they would be for an unchanged corpus) and must end with the engine serving the new version;
another is killed mid-way and must leave the old version serving and no new bundle visible.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import aiohttp
import pytest

from bot.app import build_application, running
from bot.local_api import LocalBotApi
from bot.services import SERVICES
from space import bundle
from space.jobs import RetrainSettings
from tests.bot.conftest import ADMIN_ID, InProcessEngine, bot_settings
from tests.bundle_factory import N_IMAGES, work_dir


@pytest.fixture
def models(small_bundle_models: Path, tmp_path: Path) -> Path:
    """A private copy of the small bundle's models dir and stage cache."""
    target = tmp_path / "models"
    shutil.copytree(small_bundle_models, target)
    shutil.copytree(work_dir(small_bundle_models), tmp_path / "work")
    return target


@pytest.fixture
async def engine(models: Path) -> AsyncIterator[InProcessEngine]:
    server = InProcessEngine(models)
    await server.start()
    yield server
    await server.stop()


def _job(flickr8k: Path, weights: Path, models: Path, *args: str) -> RetrainSettings:
    extra = ["--quick", *args]
    return RetrainSettings(
        corpus=str(flickr8k), format="flickr8k", weights=str(weights), models_dir=str(models),
        extra_args=tuple(extra),
    )


async def _served(engine: InProcessEngine) -> str:
    async with aiohttp.ClientSession() as s, s.get(f"{engine.url}/v1/stats") as r:
        return str((await r.json())["version"])


async def test_retrain_publishes_and_engine_serves_new_version(
    api: LocalBotApi, engine: InProcessEngine, models: Path, flickr8k_dir: Path, weights_dir: Path
) -> None:
    old = await _served(engine)
    job = _job(flickr8k_dir, weights_dir, models, "--limit", str(N_IMAGES),
               "--work", str(models.parent / "work"))
    settings = replace(bot_settings(api, engine.url), retrain=job)
    async with running(build_application(settings)):
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        final = await api.wait_for(
            "editMessageText", lambda c: "engine now serves" in c.text or "failed" in c.text, timeout=420
        )
    assert "engine now serves" in final.text, final.text
    new = await _served(engine)
    assert new != old and new in final.text
    assert bundle.list_versions(models) == sorted([old, new])
    assert bundle.active_version(models) == new
    assert f"old ({old})" in final.text and "kept 300 of 300 posts" in final.text


async def test_killed_training_leaves_old_bundle_serving(
    api: LocalBotApi, engine: InProcessEngine, models: Path, flickr8k_dir: Path, weights_dir: Path
) -> None:
    old = await _served(engine)
    # Different settings: nothing is cached, so the run is still early when it is killed.
    job = _job(flickr8k_dir, weights_dir, models, "--limit", "120", "--work", str(models.parent / "work2"))
    settings = replace(bot_settings(api, engine.url), retrain=job)
    application = build_application(settings)
    async with running(application):
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        await api.wait_for("sendMessage", lambda c: c.text.startswith("Retraining"))
        manager = application.bot_data[SERVICES].retrain
        pid = None
        for _ in range(1500):
            info = await manager.lock.read()
            status = await manager.status()
            # Text done, the CNN under way: "encode" (image features, the joint recipe) or "cnn-*" (seed).
            if info and info.get("pid") and status.stage.startswith(("encode", "cnn")):
                pid = int(info["pid"])
                break
            await asyncio.sleep(0.2)
        assert pid, "the trainer never reported progress"
        os.killpg(pid, signal.SIGKILL)  # a crash, not a polite cancel
        final = await api.wait_for("editMessageText", lambda c: "failed" in c.text, timeout=60)
    assert "failed" in final.text
    assert await _served(engine) == old
    assert bundle.list_versions(models) == [old]
    assert bundle.active_version(models) == old
    # A later run sweeps what the killed one left in staging.
    bundle.clean_staging(models)
    assert not list(models.glob(".tmp-*"))
