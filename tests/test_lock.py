"""requirements.lock is what runs: it pins every package the extras need, and the venv is exactly it.

Issue 19, item 9: scripts/setup.sh installed the extras unpinned, so the audited lock drifted from what
ran (arq, redis, filelock, … at other versions than the lock said, pip-audit's tree in the lock but not
in the venv).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

EXTRAS = ("train", "engine", "bot", "dev")


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and " " not in version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def _project_requirements() -> list[str]:
    """pyproject.toml's dependencies and those of the extras (the source, not a possibly stale egg-info)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for e in EXTRAS for r in project["optional-dependencies"][e])]


def _needed() -> dict[str, list[Requirement]]:
    """Every distribution topicspace[train,engine,bot,dev] needs here, with the requirements naming it."""
    needed: dict[str, list[Requirement]] = {}
    todo = [(Requirement(raw), "") for raw in _project_requirements()]
    seen: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = canonicalize_name(req.name)
        needed.setdefault(key, []).append(req)
        for wanted in {"", *req.extras}:
            if (key, wanted) not in seen:
                seen.add((key, wanted))
                todo.extend((Requirement(raw), wanted) for raw in metadata.requires(req.name) or [])
    return needed


def test_the_lock_pins_every_package_the_extras_need_at_an_allowed_version() -> None:
    pins = _lock()
    needed = _needed()
    missing = sorted(set(needed) - set(pins))
    assert missing == [], f"needed but not in requirements.lock: {missing}"
    refused = {name: (pins[name], [str(r.specifier) for r in reqs])
               for name, reqs in needed.items()
               if any(not r.specifier.contains(Version(pins[name]), prereleases=True) for r in reqs)}
    assert refused == {}, f"locked versions a requirement refuses: {refused}"
    assert pins.get("torch") == "2.14.1" and pins.get("torchvision") == "0.29.1"


def test_the_venv_runs_exactly_the_locked_versions() -> None:
    drift = {}
    for name, version in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(version):
            drift[name] = (version, installed)
    assert drift == {}, f"(locked, installed) differ; run bash scripts/setup.sh: {drift}"


def test_setup_installs_the_lock_and_nothing_unpinned() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [line.strip() for line in setup.splitlines() if re.search(r"pip install", line)
                and not line.lstrip().startswith("#")]
    assert installs, "scripts/setup.sh installs nothing"
    for line in installs:
        assert "--no-deps" in line, f"may resolve unpinned versions: {line}"
        assert "-r requirements.lock" in line or line.endswith("-e ."), line
    audit = (ROOT / "scripts" / "audit.sh").read_text()
    assert "--requirement requirements.lock" in audit
    assert Path(ROOT / "requirements.lock").read_text().count("pip_audit==") == 1  # audit.sh runs here
