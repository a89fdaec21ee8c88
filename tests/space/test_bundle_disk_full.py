"""A full disk while the trainer writes a bundle, with real OS write failures: the old bundle keeps serving.

``python -m train all`` (every stage cached, so only the bundle is written) runs under a small
``RLIMIT_FSIZE`` with SIGXFSZ ignored, so the kernel answers its writes with EFBIG; and, where a user and
mount namespace can be made, on a real tmpfs too small for a second bundle (ENOSPC). The few failures
those cannot reach (the ACTIVE pointer's write) are injected at the file-write level.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from engine.app import create_app
from engine.settings import Settings
from space import bundle
from space.errors import BundleWriteFailed
from tests.bundle_factory import small_bundle_args, work_dir

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "disk-full-admin-token"
TRAIN_TIMEOUT_S = 240.0
# Sets the file size limit, ignores SIGXFSZ (so a write past it fails with EFBIG instead of killing the
# process) and replaces itself with the command: the limit is the kernel's, not a Python patch.
LIMITED = (
    "import os, resource, signal, sys; "
    "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "n = int(sys.argv[1]); resource.setrlimit(resource.RLIMIT_FSIZE, (n, n)); "
    "os.execv(sys.executable, [sys.executable, *sys.argv[2:]])"
)


def _train_args(
    models: Path, source_models: Path, flickr8k: Path, weights: Path, progress: Path
) -> list[str]:
    """`train all` as the small bundle was built, reusing its stage cache (only the bundle is written)."""
    args = small_bundle_args(models, flickr8k, weights)
    args[args.index("--work") + 1] = str(work_dir(source_models))
    args[args.index("--progress-file") + 1] = str(progress)
    return ["-m", "train", *args]


def _state(models: Path) -> dict[str, Any]:
    """What a reader of ``models`` can see: versions, the active one, leftovers."""
    return {
        "versions": bundle.list_versions(models),
        "active": bundle.active_version(models),
        "leftovers": sorted(p.name for p in models.iterdir() if p.name.startswith((".tmp-", "ACTIVE."))),
    }


def _copy_models(source: Path, dst: Path) -> Path:
    shutil.copytree(source, dst, ignore=shutil.ignore_patterns(".work"))
    return dst


async def test_file_size_limit_while_writing_a_bundle(
    aiohttp_client: Any, tmp_path: Path, small_bundle_models: Path, flickr8k_dir: Path, weights_dir: Path
) -> None:
    models = _copy_models(small_bundle_models, tmp_path / "models")
    old = bundle.active_version(models)
    assert old is not None
    client = await aiohttp_client(create_app(Settings(models_dir=models, admin_token=TOKEN, poll_s=0.2)))
    expected = await (await client.get("/v1/images", params={"q": "dog", "k": "5"})).json()

    # 1 MiB: the text space and image vectors fit, the 24 MB encoder's copy into staging does not.
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", LIMITED, str(1024 * 1024),
        *_train_args(models, small_bundle_models, flickr8k_dir, weights_dir, tmp_path / "progress.jsonl"),
        cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    talk = asyncio.create_task(proc.communicate())
    served = 0
    deadline = asyncio.get_running_loop().time() + TRAIN_TIMEOUT_S
    try:
        while not talk.done():  # the engine keeps answering while the trainer fails
            r = await client.get("/v1/images", params={"q": "dog", "k": "5"})
            assert r.status == 200 and await r.json() == expected
            served += 1
            await asyncio.wait([talk], timeout=0.2)
            # Only a recomputed stage (a cache miss: the stage code changed since the fixture) takes long.
            assert asyncio.get_running_loop().time() < deadline, "train all recomputed a cached stage"
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait([talk])
    out, err = talk.result()
    stderr = err.decode(errors="replace")
    assert proc.returncode == 1, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert "error: Could not write the new bundle" in stderr and "File too large" in stderr
    assert "active bundle is unchanged" in stderr
    assert out.decode().strip() == ""  # no bundle path printed
    last = json.loads((tmp_path / "progress.jsonl").read_text().splitlines()[-1])
    assert last["stage"] == "failed" and "File too large" in last["error"]

    assert _state(models) == {"versions": [old], "active": old, "leftovers": []}
    bundle.verify(models / old)
    assert served >= 1
    r = await client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 200, await r.text()
    health = await (await client.get("/healthz")).json()
    assert health["version"] == old
    r = await client.get("/v1/images", params={"q": "dog", "k": "5"})
    assert r.status == 200 and await r.json() == expected


def _tiny_bundle(staged: Path) -> None:
    """The files publish() insists on, a few bytes each (enough for the bundle-writing mechanics)."""
    for name in bundle.REQUIRED_FILES:
        (staged / name).write_bytes(b"x" * 16)


def test_manifest_write_past_the_file_size_limit(tmp_path: Path) -> None:
    models = tmp_path / "models"
    with bundle.staging(models) as staged:
        _tiny_bundle(staged)
        bundle.publish(staged, models, {"version": "v1"})
    # A subprocess under a 512-byte limit: the data files fit, the manifest (~700 bytes) does not.
    code = (
        "import sys; from pathlib import Path; from space import bundle\n"
        "models = Path(sys.argv[1])\n"
        "with bundle.staging(models) as staged:\n"
        "    for name in bundle.REQUIRED_FILES:\n"
        "        (staged / name).write_bytes(b'x' * 16)\n"
        "    bundle.publish(staged, models, {'version': 'v2', 'metrics': {'pad': 'p' * 200}})\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", LIMITED, "512", "-c", code, str(models)],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert res.returncode == 1
    assert "BundleWriteFailed" in res.stderr and "File too large" in res.stderr, res.stderr[-2000:]
    assert _state(models) == {"versions": ["v1"], "active": "v1", "leftovers": []}
    bundle.verify(models / "v1")


def test_no_space_for_the_active_pointer_rolls_the_publish_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    models = tmp_path / "models"
    with bundle.staging(models) as staged:
        _tiny_bundle(staged)
        bundle.publish(staged, models, {"version": "v1"})
    real_fsync = os.fsync

    def full_disk(fd: int) -> None:
        # The pointer's temporary file is created, but its data never reach the disk (ENOSPC surfaces at
        # fsync on file systems that allocate late).
        if Path(os.readlink(f"/proc/self/fd/{fd}")).name.startswith(bundle.ACTIVE + "."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(BundleWriteFailed, match="No space left") as caught, bundle.staging(models) as staged:
        _tiny_bundle(staged)
        bundle.publish(staged, models, {"version": "v2"})
    assert "active bundle is unchanged" in str(caught.value)
    # Published but never activated would be a visible half-step: the rename is undone, then cleaned.
    assert _state(models) == {"versions": ["v1"], "active": "v1", "leftovers": []}
    bundle.verify(models / "v1")


def test_clean_staging_removes_a_killed_writers_leftovers(tmp_path: Path) -> None:
    models = tmp_path / "models"
    with bundle.staging(models) as staged:
        _tiny_bundle(staged)
        bundle.publish(staged, models, {"version": "v1"})
    (models / ".tmp-0123456789ab").mkdir()
    (models / ".tmp-0123456789ab" / "words.npy").write_bytes(b"half")
    (models / "ACTIVE.deadbeef.tmp").write_text("")
    (models / "ACTIVE.0000feed.tmp").write_text("")  # a live activation's, too young to remove
    stale = time.time() - 2 * bundle.ACTIVE_TMP_STALE_S
    os.utime(models / "ACTIVE.deadbeef.tmp", (stale, stale))
    assert bundle.clean_staging(models) == 2
    (models / "ACTIVE.0000feed.tmp").unlink()
    assert _state(models) == {"versions": ["v1"], "active": "v1", "leftovers": []}


# ---- on a real, small filesystem (a tmpfs in a private mount namespace) ---------------------------


def _can_mount_tmpfs(where: Path) -> bool:
    """Whether ``unshare`` can mount a tmpfs here without touching the host's mounts."""
    if shutil.which("unshare") is None:
        return False
    where.mkdir(parents=True, exist_ok=True)
    res = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
         "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(where)],
        capture_output=True, timeout=20,
    )  # fmt: skip
    return res.returncode == 0


def _disk_usage(path: Path) -> int:
    """Bytes ``path`` takes on a tmpfs: every file rounded up to whole 4 KiB pages."""
    return sum(-(-p.stat().st_size // 4096) * 4096 for p in path.rglob("*") if p.is_file())


def _write_like_the_trainer(models: Path, source: Path, version: str) -> None:
    """The pipeline's bundle writes (train/pipeline.py ``run``), fed from an existing bundle."""
    from space.textspace import TextSpace
    from space.vectorindex import build_bundle_indexes

    with bundle.staging(models) as tmp:
        TextSpace.load(source).save(tmp)
        shutil.copyfile(source / bundle.IMAGE_VECTORS, tmp / bundle.IMAGE_VECTORS)
        shutil.copyfile(source / bundle.ENCODER, tmp / bundle.ENCODER)
        shutil.copyfile(source / bundle.IMAGE_META, tmp / bundle.IMAGE_META)
        build_bundle_indexes(tmp)
        bundle.publish(tmp, models, {"version": version})


def _attempt(models: Path, write: Any) -> dict[str, Any]:
    """Run one failing write; what the writer raised and what a reader sees afterwards."""
    free = shutil.disk_usage(models).free
    try:
        write()
        raised = "nothing"
    except BundleWriteFailed as exc:
        raised = f"{type(exc.__cause__).__name__}: {exc}"
    from engine.model import load_model

    model = load_model(bundle.active_path(models))  # what an engine (re)loading now would serve
    return {
        "raised": raised,
        "served": model.version,
        "free_before": free,
        "free_after": shutil.disk_usage(models).free,
        **_state(models),
    }


def _inside(disk: Path, source: Path, size: int, result: Path) -> None:
    """In the namespace: mount a ``size``-byte tmpfs on ``disk``, copy the models in, fail two writes."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    models = _copy_models(source, disk / "models")
    old = bundle.active_path(models)
    out: dict[str, Any] = {"old": old.name}
    # 1: the disk fills while the encoder is copied into staging.
    out["encoder"] = _attempt(models, lambda: _write_like_the_trainer(models, old, "new-1"))
    # 2: everything fits but the ACTIVE pointer: the disk is filled up just before activation.
    real_activate = bundle.activate
    filled: dict[str, int] = {}

    def fill_then_activate(models_dir: Path, version: str) -> None:
        with contextlib.suppress(OSError), (disk / "filler").open("wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        filled["free"] = shutil.disk_usage(models_dir).free
        real_activate(models_dir, version)

    def tiny_then_publish() -> None:
        try:
            with bundle.staging(models) as tmp:
                _tiny_bundle(tmp)
                bundle.publish(tmp, models, {"version": "new-2"})
        finally:
            (disk / "filler").unlink(missing_ok=True)

    bundle.activate = fill_then_activate
    try:
        out["active"] = _attempt(models, tiny_then_publish)
    finally:
        bundle.activate = real_activate
    out["active"]["free_filled"] = filled["free"]
    bundle.verify(old)
    out["old_verifies"] = True
    result.write_text(json.dumps(out), encoding="utf-8")


def test_disk_full_on_a_real_small_filesystem(tmp_path: Path, small_bundle: Path) -> None:
    disk = tmp_path / "disk"
    if not _can_mount_tmpfs(disk):
        pytest.skip("cannot mount a tmpfs in a user+mount namespace here (unshare refused)")
    encoder = (small_bundle / bundle.ENCODER).stat().st_size
    # The old models and half the encoder again: a second bundle runs out of room mid-copy.
    size = _disk_usage(small_bundle.parent) + encoder // 2
    result = tmp_path / "result.json"
    cmd = [
        "unshare", "--user", "--map-root-user", "--mount", "--propagation", "private",
        sys.executable, "-c",
        "import sys; from pathlib import Path; from tests.space.test_bundle_disk_full import _inside; "
        "_inside(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))",
        str(disk), str(small_bundle.parent), str(size), str(result),
    ]  # fmt: skip
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(result.read_text())
    old = got["old"]
    for case in ("encoder", "active"):
        seen = got[case]
        assert seen["raised"].startswith("OSError") and "No space left on device" in seen["raised"], seen
        assert "active bundle is unchanged" in seen["raised"]
        assert seen["versions"] == [old] and seen["active"] == old and seen["leftovers"] == [], seen
        assert seen["served"] == old
        assert seen["free_after"] == seen["free_before"], f"{case}: the failed bundle's space was not freed"
    assert got["active"]["free_filled"] == 0  # the pointer's write met a really full disk
    assert got["old_verifies"]
