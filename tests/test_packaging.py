"""What a wheel of the project carries: the bot's catalogs, the licence, the version.

Issue 25: the bot's messages move to gettext catalogs, which must ship with the package (a source tree
that works while the installed package lacks them is the failure this guards), and the project had no
licence (all rights reserved).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

from space.version import __version__
from tests.conftest import ROOT


def test_the_wheel_ships_the_catalogs_the_licence_and_the_version(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: building writes an egg-info beside pyproject.toml
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for package in ("space", "engine", "bot", "train"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(src)], check=True, capture_output=True, timeout=300)
    wheel = zipfile.ZipFile(next((tmp_path / "dist").glob("topicspace-*.whl")))
    names = set(wheel.namelist())
    assert {"bot/locale/en.po", "bot/locale/es.po", "bot/locale/ca.po"} <= names
    for lang in ("en", "es", "ca"):  # what the installed bot compiles when it starts
        catalog = read_po(io.BytesIO(wheel.read(f"bot/locale/{lang}.po")), locale=lang)
        write_mo(io.BytesIO(), catalog)
        assert catalog.get("busy") is not None and catalog.get("n_posts") is not None
    meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert f"\nVersion: {__version__}\n" in meta and "\nLicense-Expression: MIT\n" in meta
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "MIT License" in (ROOT / "LICENSE").read_text()
