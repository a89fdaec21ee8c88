"""Bundle publishing is atomic, verified, and never exposes half a bundle."""

from __future__ import annotations

import os
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


def test_publish_stamps_and_readers_trust_the_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with bundle.staging(tmp_path) as tmp:
        _stage_minimal(tmp)
        path = bundle.publish(tmp, tmp_path, {})
    hashed: list[Path] = []
    real = bundle.sha256_file

    def counting(p: Path, chunk: int = 1 << 20) -> str:
        hashed.append(p)
        return real(p, chunk)

    monkeypatch.setattr(bundle, "sha256_file", counting)
    assert bundle.verify_once(path)["version"] == path.name
    bundle.activate(tmp_path, path.name)
    assert hashed == []  # verified once, when published: readers compare the stamp
    (path / bundle.STAMP).unlink()
    bundle.verify_once(path)  # no stamp: every file hashed, and a new stamp written
    assert len(hashed) == len(bundle.read_manifest(path)["files"])
    hashed.clear()
    bundle.verify_once(path)
    assert hashed == [] and (path / bundle.STAMP).is_file()


def test_a_file_changed_after_publishing_is_refused_at_activation(tmp_path: Path) -> None:
    with bundle.staging(tmp_path) as tmp:
        _stage_minimal(tmp)
        good = bundle.publish(tmp, tmp_path, {"version": "good"})
    with bundle.staging(tmp_path) as tmp:
        _stage_minimal(tmp)
        bad = bundle.publish(tmp, tmp_path, {"version": "bad"}, activate_it=False)
    vectors = bad / bundle.IMAGE_VECTORS
    data = bytearray(vectors.read_bytes())
    data[0] ^= 0xFF  # the same size: only the content (and the file's ctime) says it changed
    vectors.write_bytes(bytes(data))
    with pytest.raises(BundleInvalid, match=r"images\.npy does not match its sha256"):
        bundle.activate(tmp_path, "bad")
    assert bundle.active_version(tmp_path) == "good"
    # Touching a file without changing it costs one full check, then the bundle is trusted again.
    os.utime(good / bundle.IMAGE_META)
    bundle.activate(tmp_path, "good")
    assert bundle.stamp_holds(good, bundle.read_manifest(good)["files"])
