"""How ``python -m bot`` starts, or refuses to, as a service would run it (no terminal on stdin)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.bot.conftest import ROOT, TOKEN

BOT = str(Path(sys.executable).with_name("topicspace-bot"))


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("TELEGRAM_", "WEBHOOK_", "REDIS_", "BOT_"))}
    return subprocess.run([BOT, *args], env=base | env, cwd=ROOT, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def test_no_token_and_no_terminal_exits_2_with_one_line() -> None:
    # What docker compose runs with an empty TELEGRAM_TOKEN: no TTY on stdin.
    done = _run({"TELEGRAM_TOKEN": ""})
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and ": error: TELEGRAM_TOKEN is not set" in lines[0]
    assert "@BotFather" in lines[0]


def test_chat_flag_reads_a_piped_transcript() -> None:
    done = _run({"TELEGRAM_TOKEN": "", "ENGINE_URL": "http://127.0.0.1:9"}, "--chat")
    assert done.returncode == 0, done.stderr  # end of input ends the chat
    assert "Traceback" not in done.stderr


def test_webhook_mode_needs_a_valid_secret() -> None:
    env = {"TELEGRAM_TOKEN": TOKEN, "WEBHOOK_URL": "https://bot.example.org/"}
    for secret in ("", "has spaces and ;", "x" * 300):
        done = _run(env | {"WEBHOOK_SECRET": secret})
        assert done.returncode == 2
        err = done.stderr.strip()
        assert ": error: WEBHOOK_URL is set but WEBHOOK_SECRET" in err and "\n" not in err
        assert TOKEN not in err
