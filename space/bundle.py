"""The model bundle: the one thing the trainer hands to the server.

Layout of ``<models>/<version>/`` (see docs/architecture.md): ``manifest.json``, ``words.npy`` +
``vocab.json`` (text space), ``image_encoder.onnx``, ``images.npy`` + ``images.json`` (image vectors and
their metadata, row i = key i), ``items/`` (the same items as a table the engine maps, ``space.items``,
written here by :func:`publish`), ``images.usearch`` + ``words.usearch`` (cosine indexes) and ``report/``.

A bundle is written under ``<models>/.tmp-*`` and renamed into place only when complete; the active
version is the name inside ``<models>/ACTIVE``, replaced atomically. Readers never see half a bundle,
and a failed training leaves the old one serving. Its writer holds an exclusive ``flock`` on
``<models>/.tmp-*.lock`` while the folder exists, so trainers sharing a models folder only ever sweep
the staging folders of dead writers (the kernel drops a killed process's lock).

Checksums are verified once, not at every process start: :func:`publish` hashes the files it publishes
and :func:`verify_once` hashes a bundle that has no valid stamp; either records a stamp
(``.verified.json``: each file's size, mtime, ctime and inode when it was hashed). A reader (each engine
process, :func:`activate`) then only compares the files' ``stat`` with the stamp, and hashes everything
again when any file was changed, replaced or touched since, refusing the bundle if a digest no longer
matches. A change that keeps a file's size, mtime, ctime and inode (bit rot below the filesystem) is
not seen after the stamp; ``verify`` still checks every byte on demand.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from space import items as item_table
from space.errors import BundleInvalid, BundleWriteFailed, NoBundle

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# The verification stamp (not a bundle file: neither hashed nor listed in the manifest).
STAMP = ".verified.json"
ENCODER = "image_encoder.onnx"
# Optional: the static int8 copy of the encoder (train.image.quantize), present when it passed its
# fidelity check.
INT8_ENCODER = "image_encoder.int8.onnx"
IMAGE_VECTORS = "images.npy"
IMAGE_META = "images.json"
# The joint recipe: each post's caption in the joint space, beside its image vector (same rows).
CAPTION_VECTORS = "captions.npy"
IMAGE_INDEX = "images.usearch"
WORD_INDEX = "words.usearch"
REPORT_DIR = "report"
ACTIVE = "ACTIVE"
TMP_PREFIX = ".tmp-"
LOCK_SUFFIX = ".lock"
ACTIVE_TMP_STALE_S = 60.0
# Where the filesystem cannot lock (flock unsupported), a staging folder untouched this long is a dead one's.
UNLOCKABLE_STALE_S = 24 * 3600.0
FORMAT_VERSION = 1
REQUIRED_KEYS = ("version", "created", "config", "files", "metrics", "filter_report")
# What the engine cannot serve without.
REQUIRED_FILES = ("words.npy", "vocab.json", ENCODER, IMAGE_VECTORS, IMAGE_META)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def new_version() -> str:
    """A sortable, unique version name: UTC time to the millisecond plus a short random suffix.

    Names sort in publishing order (list_versions and rollback rely on it), even within one second.
    """
    now = time.time()
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + f"{int(now * 1000) % 1000:03d}"
    return f"{stamp}-{uuid.uuid4().hex[:4]}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under ``root`` to disk: a rename is durable only after the data it
    names (a power cut after the rename could otherwise publish files of zeros)."""
    for p in sorted(root.rglob("*"), reverse=True):  # files before the folders that hold them
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    _fsync_dir(root)


def _write_json_atomic(path: Path, payload: Any) -> None:
    tmp = path.with_name(path.name + f".{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(payload, f, ensure_ascii=False, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        # A full disk must not leave a half-written sibling (update_manifest writes into published bundles).
        tmp.unlink(missing_ok=True)
        raise


def _bundle_files(directory: Path) -> list[Path]:
    """Every file of a bundle folder: all below it but the manifest and the verification stamp."""
    return [p for p in sorted(directory.rglob("*"))
            if p.is_file() and p.name != MANIFEST and not p.name.startswith(STAMP)]


def hash_files(directory: Path) -> dict[str, str]:
    """sha256 of every file below ``directory`` except the manifest, keyed by relative POSIX path."""
    return {p.relative_to(directory).as_posix(): sha256_file(p) for p in _bundle_files(directory)}


def _state(path: Path) -> list[int]:
    """What changes when a file is written, replaced or touched: size, mtime, ctime (not settable), inode."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _files_digest(files: dict[str, str]) -> str:
    """One digest of a manifest's ``files`` table (a stamp belongs to exactly these checksums)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode("utf-8")).hexdigest()


def write_stamp(bundle: Path, files: dict[str, str]) -> None:
    """Record that ``bundle``'s files, as they are now, match the checksums ``files`` (just verified)."""
    state = {name: _state(bundle / name) for name in files}
    _write_json_atomic(bundle / STAMP, {"files_sha256": _files_digest(files), "state": state,
                                        "verified": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def stamp_holds(bundle: Path, files: dict[str, str]) -> bool:
    """Whether ``bundle`` has a stamp for the checksums ``files`` and no file changed since it was taken."""
    try:
        stamp = json.loads((bundle / STAMP).read_text(encoding="utf-8"))
        if stamp.get("files_sha256") != _files_digest(files):
            return False
        state = stamp["state"]
        return set(state) == set(files) and all(_state(bundle / name) == state[name] for name in files)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False  # no stamp, an unreadable one, or a file gone: verify the slow way


@contextmanager
def staging(models_dir: Path) -> Iterator[Path]:
    """A private temporary directory under ``models_dir`` for a bundle being written.

    Removed on any exception (a failed or killed training leaves no half bundle visible: readers only
    look at published names, never at ``.tmp-*``). An OS error (a full disk, a quota, a file size limit)
    becomes :class:`BundleWriteFailed`, so the trainer's CLI reports it in one line, not a traceback.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = models_dir / f"{TMP_PREFIX}{uuid.uuid4().hex[:12]}"
    lock = _writer_lock(tmp)
    # The lock before the folder: no moment at which the folder exists unclaimed.
    fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            log.warning("cannot lock %s (%s): other trainers sweep this staging folder only when stale",
                        lock, exc)
        tmp.mkdir()
        try:
            yield tmp
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(exc, OSError):
                # Not only ENOSPC/EFBIG: numpy reports a short write as a bare "N requested and M written".
                raise BundleWriteFailed(
                    f"Could not write the new bundle in {models_dir}: {exc}; {_free_space(models_dir)}. "
                    "Its files were removed and the active bundle is unchanged."
                ) from exc
            raise
    finally:
        lock.unlink(missing_ok=True)  # still held: a sweeper never sees this lock free with the folder
        os.close(fd)


def _writer_lock(staged: Path) -> Path:
    """The file whose ``flock`` a staging folder's writer holds while it lives."""
    return staged.with_name(staged.name + LOCK_SUFFIX)


def _writer_alive(lock: Path, age_s: float) -> bool:
    """Whether a live process holds the staging ``lock``; False for a dead writer's (or no lock file)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return False  # a writer removes its lock only after its folder is gone: this one died
    except OSError:
        return age_s < UNLOCKABLE_STALE_S
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return True
        return age_s < UNLOCKABLE_STALE_S  # the filesystem cannot lock: fall back on the folder's age
    finally:
        os.close(fd)  # our probe's lock, if we got it, goes with the descriptor
    return False


def _free_space(path: Path) -> str:
    """How much room is left on the filesystem of ``path``, for the message of a failed write."""
    try:
        return f"{shutil.disk_usage(path).free / 1e6:.1f} MB free there"
    except OSError:
        return "free space unknown"


def publish(staged: Path, models_dir: Path, manifest: dict[str, Any], *, activate_it: bool = True) -> Path:
    """Hash the staged files, write the manifest, rename the bundle into place, activate it (default)."""
    version = manifest.get("version") or new_version()
    full = {
        "format": FORMAT_VERSION,
        "version": version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": {},
        "metrics": {},
        "filter_report": {},
        **manifest,
    }
    full["version"] = version
    if (staged / IMAGE_META).is_file():
        # Derived here, from the very images.json published, so the two can never disagree.
        item_table.write_table_from_meta(staged, IMAGE_META)
    full["files"] = hash_files(staged)
    missing = [f for f in REQUIRED_FILES if f not in full["files"]]
    if missing:
        raise BundleInvalid(f"Refusing to publish a bundle without {', '.join(missing)}.")
    _write_json_atomic(staged / MANIFEST, full)
    write_stamp(staged, full["files"])  # hashed just now: readers need not hash them again
    _fsync_tree(staged)  # the stamp too: fsync changes no size, time or inode the stamp records
    final = models_dir / version
    os.replace(staged, final)
    _fsync_dir(models_dir)
    if activate_it:
        try:
            activate(models_dir, version)
        except BaseException:
            # Published but not activated is a half-step a reader could see (and /rollback offer):
            # undo the rename so the caller's staging cleanup removes the bundle.
            os.replace(final, staged)
            _fsync_dir(models_dir)
            raise
    log.info("published bundle %s", final)
    return final


def activate(models_dir: Path, version: str) -> None:
    """Make ``version`` the active bundle (atomic replace of the ACTIVE pointer), once it is verified.

    :func:`verify_once`: a bundle whose files changed since it was published (or last verified) is
    hashed again and refused with :class:`BundleInvalid` when a checksum does not match.
    """
    if not (models_dir / version / MANIFEST).is_file():
        raise NoBundle(f"No bundle named {version!r} in {models_dir}.")
    verify_once(models_dir / version)
    tmp = models_dir / f"{ACTIVE}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(version + "\n")
            f.flush()
            os.fsync(f.fileno())  # the new pointer is on disk before the rename makes it the one read
        os.replace(tmp, models_dir / ACTIVE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(models_dir)
    log.info("active bundle is now %s", version)


def active_version(models_dir: Path) -> str | None:
    """The active version's name, or None when no bundle was ever activated."""
    try:
        name = (models_dir / ACTIVE).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    return name or None


def active_path(models_dir: Path) -> Path:
    """The active bundle's directory; :class:`NoBundle` when there is none."""
    version = active_version(models_dir)
    if version is None or not (models_dir / version).is_dir():
        raise NoBundle(f"No active model bundle in {models_dir}: train one with `python -m train all`.")
    return models_dir / version


def list_versions(models_dir: Path) -> list[str]:
    """Published bundle versions, oldest first."""
    if not models_dir.is_dir():
        return []
    return sorted(
        p.name
        for p in models_dir.iterdir()
        if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST).is_file()
    )


def manifest_framing(manifest: dict[str, Any]) -> str:
    """How the bundle's encoder frames a photo (space.images.FRAMINGS); a bundle that names none: centre."""
    return str((manifest.get("config") or {}).get("encode_framing") or "centre")


def manifest_crops(manifest: dict[str, Any]) -> int:
    """Views averaged per corpus photo in the bundle's image vectors (space.images.CROPS); unnamed: 1."""
    return int((manifest.get("config") or {}).get("encode_crops") or 1)


def read_manifest(bundle: Path) -> dict[str, Any]:
    """The bundle's manifest, checked for the required keys (no checksums: see :func:`verify`)."""
    try:
        manifest = json.loads((bundle / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise BundleInvalid(f"{bundle} has no {MANIFEST}.") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleInvalid(f"{bundle}/{MANIFEST} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise BundleInvalid(f"{bundle}/{MANIFEST} is not a JSON object.")
    missing = [k for k in REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleInvalid(f"{bundle}/{MANIFEST} lacks {', '.join(missing)}.")
    return manifest


def verify(bundle: Path) -> dict[str, Any]:
    """Read the manifest and check every listed file's sha256; raise :class:`BundleInvalid` on any fault."""
    manifest = read_manifest(bundle)
    files = manifest["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise BundleInvalid(f"{bundle.name}: manifest lists no {name}.")
    for name, digest in files.items():
        path = bundle / name
        if not path.is_file():
            raise BundleInvalid(f"{bundle.name}: {name} is missing.")
        if sha256_file(path) != digest:
            raise BundleInvalid(f"{bundle.name}: {name} does not match its sha256 (corrupt or changed).")
    return manifest


def verify_once(bundle: Path) -> dict[str, Any]:
    """The manifest, with every listed file checked: by its stamp when one holds, else by sha256.

    A full check that passes leaves a stamp (when the folder is writable), so the next reader of the
    same files only compares their ``stat``. Raises :class:`BundleInvalid` like :func:`verify`.
    """
    manifest = read_manifest(bundle)
    files = manifest["files"]
    listed = isinstance(files, dict) and all(name in files for name in REQUIRED_FILES)
    if listed and stamp_holds(bundle, files):
        return manifest
    started = time.perf_counter()
    manifest = verify(bundle)
    log.info("verified the sha256 of %d files of %s in %.1f s", len(manifest["files"]), bundle.name,
             time.perf_counter() - started)
    try:
        write_stamp(bundle, manifest["files"])
    except OSError as exc:  # a read-only models folder: every start verifies in full, as before stamps
        log.info("cannot record the verification of %s (%s)", bundle.name, exc)
    return manifest


def update_manifest(bundle: Path, **fields: Any) -> dict[str, Any]:
    """Merge ``fields`` into a published bundle's manifest (metrics after evaluation), atomically."""
    manifest = read_manifest(bundle)
    manifest.update(fields)
    _write_json_atomic(bundle / MANIFEST, manifest)
    return manifest


def clean_staging(models_dir: Path, older_than_s: float = 0.0) -> int:
    """Remove dead writers' leftover ``.tmp-*`` folders and ``ACTIVE.*.tmp`` files; return how many.

    A staging folder whose writer still runs (its lock is held, :func:`staging`) is left alone whatever
    its age: another trainer may share the models folder.
    """
    if not models_dir.is_dir():
        return 0
    now = time.time()
    n = 0
    for p in models_dir.glob(f"{TMP_PREFIX}*"):
        try:
            age = now - p.stat().st_mtime
        except OSError:
            continue
        if p.name.endswith(LOCK_SUFFIX) and p.is_file():
            # A writer killed between its lock and its folder (or after its rename): an orphan lock.
            folder = p.with_name(p.name[: -len(LOCK_SUFFIX)])
            if age >= ACTIVE_TMP_STALE_S and not folder.exists() and not _writer_alive(p, age):
                p.unlink(missing_ok=True)
            continue
        if p.is_dir() and age >= older_than_s and not _writer_alive(_writer_lock(p), age):
            shutil.rmtree(p, ignore_errors=True)
            _writer_lock(p).unlink(missing_ok=True)
            n += 1
    for p in models_dir.glob(f"{ACTIVE}.*.tmp"):
        # A pointer file lives for microseconds: one a minute old is a dead writer's, not a live rollback's.
        if p.is_file() and now - p.stat().st_mtime >= max(older_than_s, ACTIVE_TMP_STALE_S):
            p.unlink(missing_ok=True)
            n += 1
    return n


def prune(models_dir: Path, keep: int) -> list[str]:
    """Delete the oldest bundles beyond ``keep``, never the active one; return the removed versions."""
    active = active_version(models_dir)
    versions = [v for v in list_versions(models_dir) if v != active]
    doomed = versions[: max(0, len(versions) - max(0, keep - (1 if active else 0)))]
    for v in doomed:
        shutil.rmtree(models_dir / v, ignore_errors=True)
    return doomed


def summaries(models_dir: Path) -> list[dict[str, Any]]:
    """A short description of each published bundle, newest first (for listing and rollback)."""
    out: list[dict[str, Any]] = []
    for version in reversed(list_versions(models_dir)):
        try:
            manifest = read_manifest(models_dir / version)
        except BundleInvalid as exc:
            out.append({"version": version, "error": str(exc)})
            continue
        report = manifest.get("filter_report") or {}
        out.append(
            {
                "version": version,
                "created": manifest.get("created"),
                "kept": report.get("kept"),
                "total": report.get("total"),
                "metrics": manifest.get("metrics") or {},
            }
        )
    return out
