"""The admin retraining: one job at a time, progress from the progress file, cancel, and the bot's side."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from bot.admin import status_text
from bot.app import build_application, running
from bot.local_api import LocalBotApi
from bot.retrain import RetrainError, RetrainManager, RetrainStatus
from bot.settings import RetrainSettings
from tests.bot.conftest import ADMIN_ID, bot_settings, engine_json
from tests.conftest import RedisServer
from tests.waiting import until

FAKE_TRAIN = (sys.executable, str(Path(__file__).with_name("fake_train.py")))


def job(tmp_path: Path, *extra: str, redis_url: str | None = None) -> RetrainSettings:
    """Retrain settings running the fake trainer."""
    return RetrainSettings(
        corpus=str(tmp_path / "corpus"),
        format="flickr8k",
        models_dir=str(tmp_path / "models"),
        extra_args=extra,
        command=FAKE_TRAIN,
        redis_url=redis_url,
    )


def _reported(manager: RetrainManager) -> Callable[[], Awaitable[RetrainStatus | None]]:
    """A check for :func:`until`: the job's status once its progress file names a stage."""

    async def check() -> RetrainStatus | None:
        status = await manager.status()
        return status if status.stage else None

    return check


def test_argv_is_the_contract(tmp_path: Path) -> None:
    s = RetrainSettings(corpus="/c", format="jsonl", weights="/w", models_dir="/m", extra_args=("--quick",))
    argv = s.argv(tmp_path / "p.jsonl")
    assert argv[1:] == [
        "-m",
        "train",
        "all",
        "--corpus",
        "/c",
        "--format",
        "jsonl",
        "--models",
        "/m",
        "--weights",
        "/w",
        "--quick",
        "--progress-file",
        str(tmp_path / "p.jsonl"),
    ]
    with pytest.raises(ValueError):
        RetrainSettings().argv(tmp_path / "p.jsonl")


async def test_one_job_at_a_time_with_progress(tmp_path: Path) -> None:
    manager = RetrainManager(job(tmp_path, "--steps", "4", "--step-s", "0.3"))
    await manager.start()
    with pytest.raises(RetrainError):
        await RetrainManager(job(tmp_path)).start()  # the lock file under MODELS_DIR is shared
    status = await until(_reported(manager), "the fake trainer's first progress line")
    assert status.state == "running" and status.stage == "image" and status.total == 4
    assert "epochs" in status_text(status, "en") and "%" in status_text(status, "en")
    final = await manager.wait()
    assert final.state == "done" and final.version == "v-fake"
    assert not (tmp_path / "models" / ".retrain.lock").exists()
    await manager.start()  # free again
    assert (await manager.wait()).state == "done"


async def test_failure_is_reported(tmp_path: Path) -> None:
    manager = RetrainManager(job(tmp_path, "--steps", "1", "--step-s", "0", "--fail"))
    await manager.start()
    final = await manager.wait()
    assert final.state == "failed" and "corpus is empty" in (final.error or "")


async def test_cancel_stops_the_process_group(tmp_path: Path) -> None:
    manager = RetrainManager(job(tmp_path, "--steps", "100", "--step-s", "1"))
    started = await manager.start()
    assert await manager.cancel()
    assert (await manager.wait()).state == "cancelled"
    assert started.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(started.pid, 0)
    assert not await manager.cancel()


async def test_redis_lock_survives_a_bot_restart(tmp_path: Path, redis_server: RedisServer) -> None:
    first = RetrainManager(job(tmp_path, "--steps", "100", "--step-s", "0.5", redis_url=redis_server.url))
    await first.start()
    await until(_reported(first), "the fake trainer's first progress line")
    restarted = RetrainManager(job(tmp_path, redis_url=redis_server.url))  # a new bot process
    assert (await restarted.status()).state == "running"
    with pytest.raises(RetrainError):
        await restarted.start()
    assert await restarted.cancel()
    assert (await first.wait()).state in {"cancelled", "failed"}
    assert await restarted.lock.read() is None
    await first.close()
    await restarted.close()


async def test_admin_retrain_edits_one_message_then_reloads_engine(
    api: LocalBotApi, engine_url: str, tmp_path: Path
) -> None:
    settings = replace(
        bot_settings(api, engine_url), retrain=job(tmp_path, "--steps", "3", "--step-s", "0.8")
    )
    version = (await engine_json(engine_url, "/v1/stats"))["version"]
    async with running(build_application(settings)):
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        started = await api.wait_for("sendMessage", lambda c: c.text.startswith("Retraining"))
        await api.push(api.text_update("/retrain status", user_id=ADMIN_ID))
        await api.wait_for("sendMessage", lambda c: "stage" in c.text or "starting" in c.text)
        final = await api.wait_for("editMessageText", lambda c: "engine now serves" in c.text, timeout=30)
    edits = api.calls_of("editMessageText")
    message_id = started.result["message_id"]
    assert all(int(e.params["message_id"]) == message_id for e in edits)
    assert any("%" in e.text for e in edits)  # progress was shown in place
    assert f"version {version}" in final.text


async def test_admin_can_cancel_and_only_one_job_runs(
    api: LocalBotApi, engine_url: str, tmp_path: Path
) -> None:
    settings = replace(
        bot_settings(api, engine_url), retrain=job(tmp_path, "--steps", "100", "--step-s", "0.5")
    )
    async with running(build_application(settings)):
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        started = await api.wait_for("sendMessage", lambda c: c.text.startswith("Retraining"))
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        await api.wait_for(
            "sendMessage", lambda c: c.text == "Can't retrain: a retraining is already running."
        )
        await api.push(api.text_update("/retrain cancel", user_id=ADMIN_ID))
        await api.wait_for("sendMessage", lambda c: c.text == "Retraining cancelled.")
        final = await api.wait_for("editMessageText", lambda c: c.text == "Retraining was cancelled.")
        assert int(final.params["message_id"]) == started.result["message_id"]
        await api.push(api.text_update("/retrain status", user_id=ADMIN_ID))
        await api.wait_for("sendMessage", lambda c: c.text == "Retraining was cancelled.")


async def test_admin_retrain_in_catalan(api: LocalBotApi, engine_url: str, tmp_path: Path) -> None:
    """The progress, the end and /retrain status in the admin's language (space/jobs.py built them in
    English only)."""
    api.user_languages[ADMIN_ID] = "ca"
    settings = replace(
        bot_settings(api, engine_url), retrain=job(tmp_path, "--steps", "3", "--step-s", "0.8")
    )
    async with running(build_application(settings)):
        await api.push(api.text_update("/retrain", user_id=ADMIN_ID))
        await api.wait_for("sendMessage", lambda c: c.text.startswith("Reentrenament"))
        final = await api.wait_for("editMessageText", lambda c: "El motor serveix ara" in c.text, timeout=30)
        await api.push(api.text_update("/retrain status", user_id=ADMIN_ID))
        status = await api.wait_for("sendMessage", lambda c: c.text.startswith("Reentrenament acabat"))
    edits = [e.text for e in api.calls_of("editMessageText")]
    assert any("etapa: xarxa d'imatges" in e and "èpoques" in e and "\u00a0%" in e for e in edits), edits
    assert final.text.startswith("Reentrenament acabat. El motor serveix ara la versió")
    assert "\nnou: " in final.text and "publicacions conservades" not in status.text
    assert not [e for e in edits if "Retraining" in e or "stage:" in e]
