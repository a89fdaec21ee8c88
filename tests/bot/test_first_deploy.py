"""The first deploy: the real engine on an empty models folder answers 503 ``no_bundle``; the bot says
there is no model yet (not "busy"), in the user's language, and tells an admin the exact next step."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.app import build_application, running
from bot.local_api import LocalBotApi
from bot.messages import CA, EN, ES, text
from space.jobs import RetrainSettings
from tests.bot.conftest import ADMIN_ID, InProcessEngine, bot_settings

USER = 1001


@pytest.fixture
async def empty_engine(tmp_path: Path) -> AsyncIterator[InProcessEngine]:
    """The real engine on a models folder no bundle was ever published to."""
    engine = InProcessEngine(tmp_path / "models")
    (tmp_path / "models").mkdir()
    await engine.start()
    yield engine
    await engine.stop()


async def test_no_model_yet_in_the_users_language(api: LocalBotApi, empty_engine: InProcessEngine) -> None:
    api.user_languages[USER] = "ca"
    async with running(build_application(bot_settings(api, empty_engine.url))):
        for line in ("/images gos", "/related gos", "/stats", "gos a la platja"):
            n = len(api.calls)
            await api.push(api.text_update(line, user_id=USER))
            await api.wait_for("sendMessage", lambda c: c.text == text(CA, "no_model"), after=n)
        n = len(api.calls)
        await api.push(api.text_update("/start", user_id=USER))
        greeting = await api.wait_for("sendMessage", after=n)
        assert greeting.text.startswith(text(CA, "greeting")) and text(CA, "no_model") in greeting.text
        await api.push(api.inline_update("gos", user_id=USER))
        inline = await api.wait_for("answerInlineQuery")
        assert inline.json("button")["text"] == text(CA, "no_model") and not inline.json("results")
    said = [c.text for c in api.calls if c.method == "sendMessage"]
    assert not [t for t in said if t in {text(CA, "busy"), text(EN, "busy"), text(CA, "oops")}]


async def test_an_admin_gets_the_next_step(api: LocalBotApi, empty_engine: InProcessEngine,
                                           tmp_path: Path) -> None:
    api.user_languages[ADMIN_ID] = "es"
    job = RetrainSettings(corpus="/corpus/barcelona", models_dir=str(tmp_path / "models"))
    async with running(build_application(bot_settings(api, empty_engine.url, retrain=job))):
        await api.push(api.text_update("/images cerveza", user_id=ADMIN_ID))
        step = await api.wait_for("sendMessage")
    assert step.text == text(ES, "no_model_retrain", corpus="/corpus/barcelona", models=tmp_path / "models")
    # Without a corpus configured, /retrain cannot work yet: the admin is told what to set.
    unset = bot_settings(api, empty_engine.url, retrain=replace(job, corpus=None))
    n = len(api.calls)
    async with running(build_application(unset)):
        await api.push(api.text_update("/related cerveza", user_id=ADMIN_ID))
        setup = await api.wait_for("sendMessage", after=n)
    assert setup.text == text(ES, "no_model_setup") and "TRAIN_CORPUS" in setup.text
