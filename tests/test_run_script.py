"""The README's main command, ``bash scripts/run.sh``, on a machine that already has a bundle: it starts the
engine and, with no Telegram token, chats in the terminal, also when the chat is piped in."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port


def test_run_script_serves_the_bundle_and_chats(small_bundle_models: Path, tmp_path: Path) -> None:
    port = free_port()
    drop = {"TELEGRAM_TOKEN", "REDIS_URL", "WEBHOOK_URL", "ENGINE_URL", "TRAIN_CORPUS", "TRAIN_ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env |= {"MODELS_DIR": str(small_bundle_models), "ENGINE_PORT": str(port), "TMPDIR": str(tmp_path),
            "ENGINE_LOG": str(tmp_path / "engine.log")}
    done = subprocess.run(
        ["bash", "scripts/run.sh"],
        input="/related dog\n/images dog\n/quit\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    out = done.stdout
    assert "No model bundle" not in out  # the bundle was there: nothing trained
    assert "you> /related dog" in out and "you> /images dog" in out
    related = out.split("you> /related dog", 1)[1].split("you> /images dog", 1)[0]
    assert "bot>" in related and "busy" not in related and "wrong" not in related
    images = out.split("you> /images dog", 1)[1]
    assert ".jpg" in images  # the album's pictures, saved and shown as paths
    # The engine it started is gone with it: nothing listens on its port any more.
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=5):
        pass
