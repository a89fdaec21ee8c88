"""The other ways to run the bot: the terminal chat (``python -m bot`` without a token) and webhook mode."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import aiohttp

from bot.app import build_application, running
from bot.local_api import LocalBotApi
from bot.settings import BotSettings
from tests.bot.conftest import ROOT, TOKEN, bot_settings, engine_json
from tests.conftest import free_port


async def test_terminal_chat_answers_related_dog(engine_url: str, flickr8k_dir: Path, tmp_path: Path) -> None:
    photo = sorted((flickr8k_dir / "images").glob("*.jpg"))[3]
    lines = ["/related dog", "!2", "/images dog", f"/photo {photo}", "/quit", "/related never-reached"]
    env = {k: v for k, v in os.environ.items() if k not in {"TELEGRAM_TOKEN", "REDIS_URL", "WEBHOOK_URL"}}
    env |= {"ENGINE_URL": engine_url, "TMPDIR": str(tmp_path)}
    done = subprocess.run(
        [str(Path(sys.executable).with_name("topicspace-bot")), "--chat"],  # a piped transcript, not a TTY
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    truth = await engine_json(engine_url, "/v1/related", q="dog", k=3)
    words = [w["word"] for w in truth["words"]]
    assert "you> /related dog" in out
    assert "bot> Words near «dog»:" in out and all(w in out for w in words), out
    assert f"bot> Images for «{words[0]}»" in out  # !2 tapped "🖼 <first neighbour>"
    assert "[album of 6 pictures]" in out
    saved = [
        line.split()[1] for line in out.splitlines() if line.strip()[:2] in {f"{i}." for i in range(1, 7)}
    ]
    assert saved and all(Path(p).is_file() and Path(p).read_bytes()[:2] == b"\xff\xd8" for p in saved)
    assert "bot> #" in out  # the photo's hashtags
    assert "never-reached" not in out
    assert "Traceback" not in out + done.stderr


async def test_webhook_mode_with_secret(api: LocalBotApi, engine_url: str) -> None:
    port = free_port()
    settings = bot_settings(
        api,
        engine_url,
        webhook_url="https://bot.example.org/",
        webhook_secret="hook-s3cret",
        webhook_listen="127.0.0.1",
        webhook_port=port,
    )
    async with running(build_application(settings), mode="webhook", settings=settings):
        set_hook = await api.wait_for("setWebhook")
        assert set_hook.params["url"] == "https://bot.example.org/telegram"
        assert set_hook.params["secret_token"] == "hook-s3cret"
        # Telegram posts to the public URL; here the fake API posts straight to the local listener.
        api.webhook = (f"http://127.0.0.1:{port}/telegram", "hook-s3cret")
        await api.push(api.text_update("/related dog"))
        await api.wait_for("sendMessage", lambda c: "Words near" in c.text)
        # A post without the secret is refused and never handled.
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                f"http://127.0.0.1:{port}/telegram", json=api.text_update("/related cat") | {"update_id": 999}
            ) as resp,
        ):
            assert resp.status == 403
    assert not [c for c in api.calls if "«cat»" in c.text]


def test_settings_from_env() -> None:
    s = BotSettings.from_env(
        {
            "TELEGRAM_TOKEN": "1:x",
            "ENGINE_URL": "http://engine:8080/",
            "ADMIN_IDS": "1, 2,,3",
            "TRAIN_CORPUS": "/data",
            "TRAIN_ARGS": "--quick --epochs 2",
            "MODELS_DIR": "/models",
            "REDIS_URL": "redis://r:6379/0",
        }
    )
    # Not public unless said: Telegram cannot fetch inline pictures from the bot's own ENGINE_URL.
    assert s.engine_url == "http://engine:8080" and s.engine_public_url is None
    assert s.admin_ids == frozenset({1, 2, 3})
    assert s.telegram_api_url == "https://api.telegram.org"
    assert s.retrain.extra_args == ("--quick", "--epochs", "2") and s.retrain.redis_url == "redis://r:6379/0"
    assert replace(s, token=None).token is None
    assert (
        BotSettings.from_env({"ENGINE_PUBLIC_URL": "https://e.example"}).engine_public_url
        == "https://e.example"
    )


def test_album_size_is_bounded_to_telegrams_limits() -> None:
    assert BotSettings.from_env({"ALBUM_SIZE": "50"}).album_size == 10
    assert BotSettings.from_env({"ALBUM_SIZE": "1"}).album_size == 2
    assert BotSettings.from_env({}).album_size == 6


async def test_python_m_bot_polls_telegram_and_keeps_the_token_out_of_its_logs(
    api: LocalBotApi, engine_url: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "WEBHOOK_URL"}}
    env |= {"TELEGRAM_TOKEN": TOKEN, "TELEGRAM_API_URL": api.url, "ENGINE_URL": engine_url,
            "BOT_STATE": str(tmp_path / "state.pickle")}
    log_path = tmp_path / "bot.log"
    with log_path.open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", cwd=ROOT, env=env, stdout=log, stderr=asyncio.subprocess.STDOUT
        )
        try:
            await api.wait_for("setMyCommands", timeout=60)
            await api.push(api.text_update("/related dog"))
            await api.wait_for("sendMessage", lambda c: "Words near «dog»" in c.text)
        finally:
            proc.send_signal(signal.SIGINT)  # run_polling stops cleanly on SIGINT
            code = await asyncio.wait_for(proc.wait(), 30)
    text = log_path.read_text()
    assert code == 0, text
    assert "long polling" in text and "serves version" in text
    assert TOKEN not in text and TOKEN.split(":")[1] not in text
    assert (tmp_path / "state.pickle").stat().st_size > 0  # the buttons it sent, kept for its next start
