"""Engine test fixtures: a private copy of the small models dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture
def models(tmp_path: Path, small_bundle_models: Path) -> Path:
    """A private copy of the small models dir that a test may change."""
    dst = tmp_path / "models"
    shutil.copytree(small_bundle_models, dst)
    return dst

