"""Every command's manners: --help, --version, one line and exit 2 for a bad setting, one line for a port
in use, one logging set-up (LOG_LEVEL, LOG_FORMAT=json, the redacting filter), errors printed once.

Issue 25, item 2: ``ENGINE_WORKERS=abc python -m engine`` ended in a ValueError traceback and a taken port
in an OSError one; 9 of the engine's 16 options had no help and none showed its variable; the help printed
the docstring's literal double backticks; ``topicspace-engine --help`` said "usage: python -m engine";
``python -m bot --help`` listed only ``--chat``; no command had ``--version``; ``train`` printed each
error twice and installed no redacting filter.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from space.cli import Parser
from space.logs import REDACTED, LogSettings, setup_logging
from space.version import __version__
from tests.conftest import ROOT

BIN = Path(sys.executable).parent
SECRET = "s3cr3t-admin-token-77"


def _run(argv: list[str], timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    for name in ("REDIS_URL", "TELEGRAM_TOKEN", "LOG_LEVEL", "LOG_FORMAT"):
        if name not in env:
            full_env.pop(name, None)
    return subprocess.run(argv, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _parsers() -> dict[str, Callable[[], Parser]]:
    from bot.__main__ import build_parser as bot
    from engine.__main__ import build_parser as engine
    from space.announce import build_parser as announce
    from train.__main__ import build_parser as train
    from train.report.__main__ import build_parser as report
    from train.worker import build_parser as worker

    return {"engine": engine, "bot": bot, "train": train, "train.worker": worker, "space.announce": announce,
            "train.report": report}


def _all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


@pytest.mark.parametrize("name", ["engine", "bot", "train", "train.worker", "space.announce", "train.report"])
def test_every_option_has_help_with_its_default_and_variable(name: str) -> None:
    top = _parsers()[name]()
    for parser in _all_parsers(top):
        text = parser.format_help()
        assert "``" not in text, f"{parser.prog}: literal double backticks in --help"
        for action in parser._actions:
            if action.option_strings and action.dest not in ("help", "version"):
                assert action.help, f"{parser.prog} {action.option_strings[0]} has no help"
    assert "--version" in top.format_help() and "LOG_LEVEL" in top.format_help()


def test_engine_help_names_each_variable_and_default() -> None:
    from engine.__main__ import build_parser

    text = " ".join(build_parser().format_help().split())
    for flag, env, default in [("--workers", "ENGINE_WORKERS", "2"), ("--encoder", "ENGINE_ENCODER", "fp32"),
                               ("--poll", "ENGINE_POLL_S", "2.0"),
                               ("--queue-limit", "ENGINE_QUEUE_LIMIT", "64")]:
        assert flag in text and f"default: {default}; env {env}" in text, (flag, env)
    for env in ("REDIS_URL", "ENGINE_ADMIN_TOKEN", "ENGINE_GC_FREEZE", "ENGINE_BUNDLE_CHANNEL"):
        assert env in text


def test_bot_help_lists_every_variable_of_env_example() -> None:
    from bot.__main__ import build_parser

    text = build_parser().format_help()
    example = (ROOT / ".env.example").read_text()
    section = example.split("# --- Telegram bot")[1].split("\n", 1)[1].split("# --- Engine")[0]
    names = [line.split("=", 1)[0] for line in section.splitlines() if line and not line.startswith("#")]
    assert len(names) >= 15
    missing = [n for n in [*names, "REDIS_URL", "RETRAIN_MODE", "TRAIN_CORPUS", "LOG_LEVEL"] if n not in text]
    assert missing == []


@pytest.mark.parametrize("script", ["topicspace-engine", "topicspace-bot", "topicspace-train",
                                    "topicspace-trainer-worker"])
def test_console_scripts_name_themselves_and_print_the_version(script: str) -> None:
    version = _run([str(BIN / script), "--version"])
    assert version.returncode == 0 and version.stdout.strip() == f"{script} {__version__}"
    usage = _run([str(BIN / script), "--help"])
    assert usage.returncode == 0 and usage.stdout.startswith(f"usage: {script} ")


def test_python_m_names_itself() -> None:
    out = _run([sys.executable, "-m", "engine", "--help"])
    assert out.returncode == 0 and out.stdout.startswith("usage: python -m engine ")
    assert _run([sys.executable, "-m", "space.announce", "--version"]).stdout.strip() == (
        f"python -m space.announce {__version__}")


@pytest.mark.parametrize(("argv", "env", "names"), [
    (["-m", "engine", "--models", "m"], {"ENGINE_WORKERS": "abc"}, ["ENGINE_WORKERS", "a whole number ≥ 1"]),
    (["-m", "engine", "--models", "m", "--workers", "0"], {}, ["--workers", "a whole number ≥ 1"]),
    (["-m", "engine", "--models", "m"], {"ENGINE_ENCODER": "fp8"}, ["ENGINE_ENCODER", "fp32, int8"]),
    (["-m", "engine", "--models", "m"], {"ENGINE_GC_FREEZE": "maybe"}, ["ENGINE_GC_FREEZE", "1/0"]),
    (["-m", "bot"], {"ALBUM_SIZE": "six"}, ["ALBUM_SIZE", "a whole number"]),
    (["-m", "bot"], {"ADMIN_IDS": "alice"}, ["ADMIN_IDS", "comma-separated whole numbers"]),
    (["-m", "bot"], {"RETRAIN_MODE": "celery"}, ["RETRAIN_MODE", "local, arq"]),
    (["-m", "train", "eval"], {"LOG_LEVEL": "LOUD"}, ["LOG_LEVEL", "DEBUG, INFO"]),
    (["-m", "train", "all", "--corpus", "c", "--format", "jsonl", "--joint-set", "epochs=ten"], {},
     ["--joint-set epochs", "a whole number"]),
    (["-m", "train.worker"], {"LOG_FORMAT": "xml"}, ["LOG_FORMAT", "text, json"]),
])
def test_a_bad_setting_or_flag_is_one_line_and_exit_2(argv: list[str], env: dict[str, str],
                                                       names: list[str]) -> None:
    out = _run([sys.executable, *argv], **env)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert all(n in lines[0] for n in names), lines[0]


def test_a_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        out = _run([sys.executable, "-m", "engine", "--models", str(tmp_path), "--port", str(port)],
                   LOG_LEVEL="ERROR")
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines() == [
        f"python -m engine: error: cannot listen on 127.0.0.1:{port}: address already in use "
        "(choose another --port)"]


def test_train_prints_an_error_once_and_redacts_it(tmp_path: Path) -> None:
    missing = tmp_path / SECRET / "posts.jsonl"
    out = _run([sys.executable, "-m", "train", "ingest", "--corpus", str(missing), "--format", "jsonl",
                "--models", str(tmp_path / "models")], ENGINE_ADMIN_TOKEN=SECRET)
    assert out.returncode == 1
    said = [line for line in out.stderr.replace("\r", "\n").splitlines() if "not found" in line]
    assert said == [f"error: {tmp_path}/{REDACTED}/posts.jsonl not found"], out.stderr
    assert SECRET not in out.stderr


def test_json_log_lines_through_the_redacting_filter() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    try:
        setup_logging(LogSettings("DEBUG", "json"), [SECRET], stream=buf)
        log = logging.getLogger("tests.commands")
        try:
            raise RuntimeError(f"boom {SECRET}")
        except RuntimeError:
            log.error("token %s", SECRET, exc_info=True)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    entry = json.loads(buf.getvalue().strip())
    assert entry["level"] == "ERROR" and entry["logger"] == "tests.commands"
    assert entry["message"] == f"token {REDACTED}" and f"boom {REDACTED}" in entry["exception"]
    assert SECRET not in buf.getvalue()


def test_announce_logs_json_when_asked(tmp_path: Path) -> None:
    out = _run([sys.executable, "-m", "space.announce", "--models", str(tmp_path)], LOG_FORMAT="json")
    assert out.returncode == 1
    entry = json.loads(out.stderr.strip().splitlines()[-1])
    assert entry["level"] == "ERROR" and "REDIS_URL is not set" in entry["message"]


def test_arq_is_optional_and_a_clear_line_when_asked_for(monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """RETRAIN_MODE=arq without the arq package: one line naming the extra (bot and worker), exit 2."""
    import importlib.util

    import bot.__main__ as bot_main
    from bot.settings import BotSettings
    from train import worker

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "arq" else real(name, *a))
    problem = bot_main._startup_error(BotSettings.from_env({"TELEGRAM_TOKEN": "1:x", "RETRAIN_MODE": "arq"}),
                                      chat=False)
    assert problem is not None and "pip install 'topicspace[arq]'" in problem
    assert bot_main._startup_error(BotSettings.from_env({"TELEGRAM_TOKEN": "1:x"}), chat=False) is None
    monkeypatch.setitem(sys.modules, "arq.worker", None)  # import arq.worker raises ImportError
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    with pytest.raises(SystemExit) as stop:
        worker.main([])
    err = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(err) == 1 and "topicspace[arq]" in err[0]
