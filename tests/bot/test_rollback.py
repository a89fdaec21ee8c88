"""/retrain versions and /retrain rollback: admins list bundles and switch back, through the engine."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.app import build_application, running
from bot.engine_answers import Versions
from bot.engine_client import EngineClient
from bot.local_api import LocalBotApi
from space import bundle
from tests.bot.conftest import ADMIN_ID, InProcessEngine, bot_settings
from tests.engine.helpers import publish_copy


@pytest.fixture
async def two_versions(small_bundle: Path, tmp_path: Path) -> AsyncIterator[tuple[InProcessEngine, str, str]]:
    models = tmp_path / "models"
    first = publish_copy(models, small_bundle)
    second = publish_copy(models, small_bundle)
    engine = InProcessEngine(models)
    await engine.start()
    yield engine, first, second
    await engine.stop()


async def test_versions_and_rollback(
    api: LocalBotApi, two_versions: tuple[InProcessEngine, str, str]
) -> None:
    engine, first, second = two_versions
    async with running(build_application(bot_settings(api, engine.url))):
        await api.push(api.text_update("/retrain versions", user_id=ADMIN_ID))
        listing = await api.wait_for("sendMessage", lambda c: c.text.startswith("Published bundles"))
        assert f"{second}: kept" in listing.text and "← serving" in listing.text
        assert listing.text.index(second) < listing.text.index(first)

        await api.push(api.text_update("/retrain rollback nope", user_id=ADMIN_ID))
        await api.wait_for("sendMessage", lambda c: c.text.startswith("No bundle named nope"))

        await api.push(api.text_update("/retrain rollback", user_id=ADMIN_ID))
        done = await api.wait_for("sendMessage", lambda c: c.text.startswith("Rolled back"))
        assert f"serves {first} (was {second})" in done.text
        assert bundle.active_version(engine.models) == first

        await api.push(api.text_update("/retrain rollback", user_id=ADMIN_ID + 1))
        await api.wait_for("sendMessage", lambda c: "only the bot's admins" in c.text)
    assert bundle.active_version(engine.models) == first


async def test_rollback_to_a_version_removed_since_the_listing(
    api: LocalBotApi, two_versions: tuple[InProcessEngine, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine answers 404 unknown_version (a client error), which the bot reads as such, not "busy"."""
    engine, first, _ = two_versions
    listed = EngineClient.versions

    async def listing_then_removed(self: EngineClient) -> Versions:
        answer = await listed(self)
        shutil.rmtree(engine.models / first)  # another admin pruned it meanwhile
        return answer

    monkeypatch.setattr(EngineClient, "versions", listing_then_removed)
    async with running(build_application(bot_settings(api, engine.url))):
        await api.push(api.text_update(f"/retrain rollback {first}", user_id=ADMIN_ID))
        reply = await api.wait_for("sendMessage", lambda c: c.params.get("chat_id") is not None)
    assert reply.text.startswith(f"No bundle named {first}"), reply.text
