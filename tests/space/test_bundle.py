"""Bundle publishing is atomic, verified, and never exposes half a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from space import bundle
from space.errors import BundleInvalid, NoBundle


def _stage_minimal(tmp: Path) -> None:
    for name in bundle.REQUIRED_FILES:
        (tmp / name).write_bytes(name.encode())
    np.save(tmp / "extra.npy", np.arange(3))


def test_publish_activate_verify(tmp_path: Path) -> None:
    with bundle.staging(tmp_path) as tmp:
        _stage_minimal(tmp)
        path = bundle.publish(tmp, tmp_path, {"filter_report": {"kept": 1}})
    assert bundle.active_path(tmp_path) == path
    manifest = bundle.verify(path)
    assert set(manifest["files"]) == {*bundle.REQUIRED_FILES, "extra.npy"}
    assert manifest["filter_report"] == {"kept": 1}
    assert not list(tmp_path.glob(".tmp-*"))


def test_failure_while_staging_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), bundle.staging(tmp_path) as tmp:
        _stage_minimal(tmp)
        raise RuntimeError("disk full")
    assert bundle.list_versions(tmp_path) == []
    assert not list(tmp_path.glob(".tmp-*"))
    with pytest.raises(NoBundle):
        bundle.active_path(tmp_path)


def test_incomplete_bundle_not_published(tmp_path: Path) -> None:
    with pytest.raises(BundleInvalid), bundle.staging(tmp_path) as tmp:
        (tmp / "words.npy").write_bytes(b"x")
        bundle.publish(tmp, tmp_path, {})
    assert bundle.list_versions(tmp_path) == []


def test_corruption_detected(tmp_path: Path) -> None:
    with bundle.staging(tmp_path) as tmp:
        _stage_minimal(tmp)
        path = bundle.publish(tmp, tmp_path, {})
    (path / bundle.IMAGE_VECTORS).write_bytes(b"tampered")
    with pytest.raises(BundleInvalid, match="sha256"):
        bundle.verify(path)
    (path / bundle.IMAGE_VECTORS).unlink()
    with pytest.raises(BundleInvalid, match="missing"):
        bundle.verify(path)


def test_prune_keeps_active_and_newest(tmp_path: Path) -> None:
    versions = []
    for i in range(4):
        with bundle.staging(tmp_path) as tmp:
            _stage_minimal(tmp)
            versions.append(bundle.publish(tmp, tmp_path, {"version": f"v{i}"}, activate_it=i == 1).name)
    removed = bundle.prune(tmp_path, keep=2)
    left = bundle.list_versions(tmp_path)
    assert "v1" in left and len(left) == 2 and "v3" in left
    assert set(removed) == {"v0", "v2"}


def test_clean_staging(tmp_path: Path) -> None:
    (tmp_path / ".tmp-dead").mkdir()
    assert bundle.clean_staging(tmp_path) == 1
    assert not (tmp_path / ".tmp-dead").exists()
