"""`python -m train data flickr8k`: the public archives' layout, built small here, to a readable corpus.

The archives are made in the test as the real ones are laid out (``Flickr8k_Dataset.zip`` with
``Flicker8k_Dataset/*.jpg``, ``Flickr8k_text.zip`` with the captions and split lists), from real photos,
and either given with ``--from`` or downloaded from a local HTTP server on loopback (``--mirror``).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from tests.conftest import free_port
from train.__main__ import main
from train.config import IngestConfig
from train.corpus.ingest import ingest

SPLITS = {"Flickr_8k.trainImages.txt": 4, "Flickr_8k.devImages.txt": 1, "Flickr_8k.testImages.txt": 1}


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory, flickr8k_dir: Path) -> Path:
    """A folder holding the two archives, in the real ones' layout, for 7 photos (6 in the splits)."""
    root = tmp_path_factory.mktemp("archives")
    photos = sorted((flickr8k_dir / "images").glob("*.jpg"))[:7]
    names = {p.name for p in photos}
    tokens = [line for line in (flickr8k_dir / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines()
              if line.split("#", 1)[0] in names]
    with zipfile.ZipFile(root / "Flickr8k_Dataset.zip", "w") as z:
        z.writestr("Flicker8k_Dataset/", "")
        for p in photos:
            z.write(p, f"Flicker8k_Dataset/{p.name}")
        z.writestr(f"__MACOSX/Flicker8k_Dataset/._{photos[0].name}", b"\x00\x05\x16\x07 resource fork")
        z.writestr("../outside.jpg", photos[0].read_bytes())  # a hostile name: unpacked by its name only
    with zipfile.ZipFile(root / "Flickr8k_text.zip", "w") as z:
        z.writestr("Flickr8k.token.txt", "\n".join(tokens) + "\n")
        z.writestr("Flickr8k.lemma.token.txt", "\n".join(tokens) + "\n")
        z.writestr("readme.txt", "Flickr8k text files\n")
        start = 0
        for name, n in SPLITS.items():
            z.writestr(name, "".join(f"{p.name}\n" for p in photos[start:start + n]))
            start += n
    return root


def _check_corpus(out: Path, summary: dict[str, object]) -> None:
    assert summary["images"] == 8 and summary["captions"] == 35  # 7 photos + the hostile name's
    assert summary["splits"] == dict(SPLITS) and summary["captioned_images_missing"] == 0
    assert (out / "images" / "outside.jpg").is_file() and not (out.parent / "outside.jpg").exists()
    assert not list((out / "images").glob("._*"))
    posts, stats = ingest(IngestConfig(out, "flickr8k"))
    assert len(posts) == 7 and not stats.bad and all(len(p.captions) == 5 for p in posts)
    assert Counter(p.split for p in posts) == {"train": 4, "val": 1, "test": 1, None: 1}


def test_from_archives_the_user_already_has(archives: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "flickr8k"
    # Given in any order, under any names: each is recognised by what it holds.
    text = tmp_path / "captions-download.zip"
    text.write_bytes((archives / "Flickr8k_text.zip").read_bytes())
    rc = main(["data", "flickr8k", "--out", str(out), "--from", str(text),
               "--from", str(archives / "Flickr8k_Dataset.zip")])
    assert rc == 0
    _check_corpus(out, json.loads(capsys.readouterr().out))


@pytest.fixture
def mirror(archives: Path) -> Iterator[str]:
    """The archives served over HTTP on loopback, as a mirror of the published ones."""
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(archives))
    http.server.SimpleHTTPRequestHandler.log_message = lambda *a: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_and_checksum(mirror: str, archives: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    digest = hashlib.sha256((archives / "Flickr8k_text.zip").read_bytes()).hexdigest()
    out = tmp_path / "ok"
    assert main(["data", "flickr8k", "--out", str(out), "--mirror", mirror,
                 "--sha256", f"Flickr8k_text.zip={digest}"]) == 0
    _check_corpus(out, json.loads(capsys.readouterr().out))
    capsys.readouterr()
    assert (out / ".downloads" / "Flickr8k_Dataset.zip").is_file()
    assert not list((out / ".downloads").glob("*.part"))
    wrong = "0" * 64
    assert main(["data", "flickr8k", "--out", str(tmp_path / "bad"), "--mirror", mirror,
                 "--sha256", f"Flickr8k_Dataset.zip={wrong}"]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "sha256" in errors[0] and wrong in errors[0]  # log lines (INFO) aside
    assert not (tmp_path / "bad" / "images").exists()  # nothing unpacked from an archive that failed
    assert not (tmp_path / "bad" / ".downloads" / "Flickr8k_Dataset.zip").exists()


def test_offline_is_one_clear_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    closed = f"http://127.0.0.1:{free_port()}/"  # nobody listens: what an offline machine sees
    assert main(["data", "flickr8k", "--out", str(tmp_path / "f"), "--mirror", closed]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "cannot download" in errors[0] and "offline?" in errors[0]
    assert "--from" in errors[0]
    assert not list((tmp_path / "f").rglob("*.part"))
    not_a_zip = tmp_path / "x.zip"
    not_a_zip.write_bytes(b"not a zip at all")
    assert main(["data", "flickr8k", "--out", str(tmp_path / "g"), "--from", str(not_a_zip)]) == 1
    assert "is not a zip archive" in capsys.readouterr().err


def test_the_default_archives_are_the_published_ones() -> None:
    from train.corpus.fetch import ARCHIVES

    assert set(ARCHIVES) == {"Flickr8k_Dataset.zip", "Flickr8k_text.zip"}
    assert all(a.url.startswith("https://") and a.url.endswith(name) for name, a in ARCHIVES.items())
