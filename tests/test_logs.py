"""Secrets never reach a log line: every secret the bot and the engine hold, in every part of a record.

Issue 19, item 6: the bot's filter was given three secrets but only the Telegram token was tested, a
record's ``stack_info`` went out unredacted, and the engine logged through no filter at all.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.logs import RedactingFilter
from bot.settings import BotSettings
from engine.__main__ import settings_from
from space.logs import REDACTED, configure_logging

TELEGRAM = "123456:AAE-telegram-token"
ADMIN = "engine-admin-7f3a"
WEBHOOK = "hook-secret-91b"
REDIS_PASSWORD = "redis-p%40ss"  # as written in the URL; decoded it is "redis-p@ss"


@pytest.fixture
def root_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _log_everywhere(secrets: list[str]) -> None:
    """One record holding every secret in its message, its arguments, its traceback and its stack."""
    log = logging.getLogger("tests.logs")
    joined = " ".join(secrets)
    try:
        raise RuntimeError(f"failed with {joined}")
    except RuntimeError:
        log.warning("calling https://x/bot%s/getMe as %s", secrets[0], joined, exc_info=True, stack_info=True)
    log.warning(f"plain {joined}")  # a message built before logging: no arguments


def _assert_redacted(text: str, secrets: list[str]) -> None:
    assert "Stack (most recent call last)" in text and "Traceback" in text  # every part was logged
    leaked = [s for s in secrets if s in text]
    assert leaked == [], f"secrets in the log: {leaked}"
    assert f"failed with {' '.join([REDACTED] * len(secrets))}" in text  # the traceback's message


def test_filter_redacts_the_message_args_traceback_and_stack() -> None:
    secrets = [TELEGRAM, ADMIN, WEBHOOK]
    record = logging.LogRecord("httpx", logging.INFO, __file__, 1, "POST %s", (f"https://x/bot{TELEGRAM}",),
                               None, sinfo=f"Stack (most recent call last):\n  where {ADMIN} {WEBHOOK}")
    try:
        raise RuntimeError(f"failed at /bot{TELEGRAM}/sendMessage {ADMIN} {WEBHOOK}")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    assert RedactingFilter(secrets).filter(record)
    text = logging.Formatter().format(record)
    assert [s for s in secrets if s in text] == []
    assert text.count(REDACTED) == 6


def test_the_bots_log_keeps_all_its_secrets_out(root_logging: None) -> None:
    from bot.logs import bot_secrets
    from bot.logs import configure_logging as configure_bot_logging

    settings = BotSettings.from_env({
        "TELEGRAM_TOKEN": TELEGRAM, "ENGINE_ADMIN_TOKEN": ADMIN, "WEBHOOK_SECRET": WEBHOOK,
        "WEBHOOK_URL": "https://bot.example/hook", "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0",
    })
    secrets = bot_secrets(settings)
    assert {TELEGRAM, ADMIN, WEBHOOK, REDIS_PASSWORD, "redis-p@ss"} <= set(secrets)
    buf = io.StringIO()
    configure_bot_logging(secrets, stream=buf)
    _log_everywhere([TELEGRAM, ADMIN, WEBHOOK, REDIS_PASSWORD, "redis-p@ss"])
    _assert_redacted(buf.getvalue(), [TELEGRAM, ADMIN, WEBHOOK, REDIS_PASSWORD, "redis-p@ss"])


def test_the_engines_log_keeps_its_secrets_out(root_logging: None, tmp_path: Path) -> None:
    settings = settings_from(["--models", str(tmp_path)], env={
        "ENGINE_ADMIN_TOKEN": ADMIN, "REDIS_URL": f"redis://user:{REDIS_PASSWORD}@127.0.0.1:1/0",
    })
    assert ADMIN not in repr(settings) and REDIS_PASSWORD not in repr(settings)
    buf = io.StringIO()
    configure_logging(settings.secrets(), stream=buf)
    _log_everywhere([ADMIN, REDIS_PASSWORD, "redis-p@ss"])
    _assert_redacted(buf.getvalue(), [ADMIN, REDIS_PASSWORD, "redis-p@ss"])
