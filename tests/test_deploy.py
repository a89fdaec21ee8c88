"""The compose deployment: services run console scripts the tests exercise; all variables documented."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# The console scripts and the tests that run them as real processes.
EXERCISED = {
    "topicspace-engine": "tests/engine/test_main.py",
    "topicspace-bot": "tests/bot/test_modes.py",
    "topicspace-trainer-worker": "tests/bot/test_retrain_arq.py",
}


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def test_services_and_healthchecks() -> None:
    services = _compose()["services"]
    assert {"redis", "engine", "bot", "trainer"} <= set(services)
    assert services["trainer"]["profiles"] == ["train"]
    for name in ("redis", "engine"):
        assert "healthcheck" in services[name]
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", name
    assert "models:/models" in services["engine"]["volumes"]
    assert "models:/models" in services["trainer"]["volumes"]


def test_every_command_is_an_exercised_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, svc in _compose()["services"].items():
        if "build" not in svc:
            continue
        command = svc["command"][0]
        assert command in scripts, f"{name}: {command} is not a console script"
        test_file = ROOT / EXERCISED[command]
        assert command in test_file.read_text() or scripts[command].split(":")[0] in test_file.read_text()
    dockerfiles = {p.name: p.read_text() for p in (ROOT / "docker").glob("Dockerfile.*")}
    assert "pip install torch" not in dockerfiles["Dockerfile.serve"]
    assert "torch==2.14.1" in dockerfiles["Dockerfile.train"]


def test_every_variable_is_documented() -> None:
    documented = _documented()
    text = (ROOT / "docker-compose.yml").read_text()
    used = set(re.findall(r"\$\{([A-Z][A-Z0-9_]+)", text))
    for svc in _compose()["services"].values():
        env = svc.get("environment") or {}
        used |= set(env)
    code_vars: set[str] = set()
    pattern = r"""(?:get|environ\[|getenv)\(?\s*["']([A-Z][A-Z0-9_]{2,})["']"""
    for package in ("engine", "bot", "train", "space"):
        for path in (ROOT / package).glob("*.py"):
            code_vars |= set(re.findall(pattern, path.read_text()))
    # Set by torchrun for each rank (train/distributed.py), not by the user.
    code_vars -= {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}
    missing = sorted((used | code_vars) - documented)
    assert not missing, f"undocumented in .env.example: {missing}"
    assert len(code_vars) > 15  # the scan really found the code's variables
