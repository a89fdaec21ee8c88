"""``python -m train data flickr8k --out DIR``: the Flickr8k corpus from its public archives.

Flickr8k (M. Hodosh, P. Young, J. Hockenmaier, JAIR 2013; research use only, under the dataset's terms)
is distributed as two archives: ``Flickr8k_Dataset.zip`` (the 8,091 photos, under ``Flicker8k_Dataset/``)
and ``Flickr8k_text.zip`` (``Flickr8k.token.txt``, the captions, and the split lists). They are downloaded
from :data:`ARCHIVES` (or ``--mirror URL``, a folder holding both), or taken from files the user already has
(``--from ARCHIVE``, each archive recognised by what it holds), and unpacked into the folder
``--format flickr8k`` reads: ``DIR/images/*.jpg`` and the text files beside it. A download is checked
against its SHA-256 when one is configured (:data:`ARCHIVES`, or ``--sha256 NAME=HEX``); the archives'
own checksums are not published, so none is configured by default.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archive:
    """One of the dataset's archives: where it is published, its checksum when known, what it holds."""

    url: str
    sha256: str | None
    holds: str  # "images" or "text"


RELEASE = "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k"
ARCHIVES: dict[str, Archive] = {
    "Flickr8k_Dataset.zip": Archive(f"{RELEASE}/Flickr8k_Dataset.zip", None, "images"),
    "Flickr8k_text.zip": Archive(f"{RELEASE}/Flickr8k_text.zip", None, "text"),
}
TOKENS = "Flickr8k.token.txt"
TEXT_FILES = (TOKENS, "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt", "Flickr_8k.testImages.txt")
CHUNK = 1 << 20


class DataUnavailable(OSError):
    """An archive could not be downloaded, or is not what it should be."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(url: str, dest: Path, timeout_s: float = 60.0) -> Path:
    """``url`` to ``dest`` (through ``dest.part``, so a broken download never looks finished)."""
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp, part.open("wb") as f:
            shutil.copyfileobj(resp, f, CHUNK)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataUnavailable(
            f"cannot download {url} ({reason}): offline? Fetch {dest.name} on a machine that is online and "
            "pass it with --from"
        ) from None
    part.replace(dest)
    return dest


def _kind(path: Path) -> str:
    """What an archive holds, from its member names: "images" or "text"."""
    try:
        with zipfile.ZipFile(path) as z:
            names = [PurePosixPath(n).name for n in z.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataUnavailable(f"{path} is not a zip archive ({exc})") from None
    if TOKENS in names:
        return "text"
    if any(n.lower().endswith(".jpg") for n in names):
        return "images"
    raise DataUnavailable(f"{path} holds neither Flickr8k photos nor {TOKENS}")


def _members(z: zipfile.ZipFile, wanted: str) -> list[tuple[zipfile.ZipInfo, str]]:
    """(member, file name) to extract: photos, or the known text files; never a path from the archive."""
    out = []
    for info in z.infolist():
        path = PurePosixPath(info.filename)
        if info.is_dir() or "__MACOSX" in path.parts or path.name.startswith("."):
            continue
        photo = wanted == "images" and path.suffix.lower() == ".jpg"
        if photo or (wanted == "text" and path.name in TEXT_FILES):
            out.append((info, path.name))
    return out


def unpack(archive: Path, kind: str, out: Path) -> int:
    """Extract an archive's photos into ``out/images`` or its text files into ``out``; the count."""
    target = out / "images" if kind == "images" else out
    target.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as z:
        members = _members(z, kind)
        for info, name in members:
            with z.open(info) as src, (target / name).open("wb") as dst:
                shutil.copyfileobj(src, dst, CHUNK)
    return len(members)


def _checked(path: Path, name: str, expected: str | None, downloaded: bool = False) -> None:
    if expected is None:
        log.info("%s: no checksum configured, not verified", name)
        return
    got = _sha256(path)
    if got != expected.lower():
        if downloaded:
            path.unlink()  # the next run downloads it again
        raise DataUnavailable(f"{path}: sha256 {got} is not the configured {expected} ({name})")


def fetch_flickr8k(out: Path, sources: Sequence[Path] = (), *, mirror: str | None = None,
                   sha256: dict[str, str] | None = None, timeout_s: float = 60.0) -> dict[str, Any]:
    """Download (or take ``sources``) and unpack Flickr8k into ``out``; a summary of what is there."""
    out = Path(out)
    sums = {name: a.sha256 for name, a in ARCHIVES.items()} | dict(sha256 or {})
    archives: dict[str, Path] = {}
    for source in sources:
        if not Path(source).is_file():
            raise DataUnavailable(f"{source} not found")
        archives[_kind(Path(source))] = Path(source)
    for name, archive in ARCHIVES.items():
        if archive.holds in archives:  # given with --from
            _checked(archives[archive.holds], name, sums.get(name))
            continue
        url = f"{mirror.rstrip('/')}/{name}" if mirror else archive.url
        path = download(url, out / ".downloads" / name, timeout_s)
        _checked(path, name, sums.get(name), downloaded=True)
        if _kind(path) != archive.holds:
            raise DataUnavailable(f"{url} does not hold the Flickr8k {archive.holds}")
        archives[archive.holds] = path
    counts = {kind: unpack(path, kind, out) for kind, path in sorted(archives.items())}
    return summarize(out) | {"unpacked": counts, "archives": {k: str(v) for k, v in archives.items()}}


def summarize(root: Path) -> dict[str, Any]:
    """Photos, captions and split sizes of a Flickr8k folder (and captions whose photo is missing)."""
    images = {p.name for p in (root / "images").glob("*.jpg")}
    named: set[str] = set()
    captions = 0
    for line in (root / TOKENS).read_text(encoding="utf-8").splitlines():
        name, tab, _ = line.partition("\t")
        if tab:
            captions += 1
            named.add(name.split("#", 1)[0])
    splits = {}
    for name in TEXT_FILES[1:]:
        path = root / name
        splits[name] = len(path.read_text(encoding="utf-8").split()) if path.is_file() else 0
    missing = sorted(named - images)
    if missing:
        log.warning("%d captioned photos are not in the archive (e.g. %s): the reader skips them",
                    len(missing), missing[0])
    return {"out": str(root), "images": len(images), "captions": captions, "splits": splits,
            "captioned_images_missing": len(missing)}
