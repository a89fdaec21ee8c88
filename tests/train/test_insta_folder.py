"""Any instaloader folder: the folders are written by instaloader itself (its ``download_post``, file-name
patterns, caption files and ``.json.xz`` metadata), offline — only the picture download is replaced by a
local JPEG whose colour says which post it belongs to, so every caption can be checked against its photo.
"""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import instaloader
import pytest
from PIL import Image

from train.config import IngestConfig
from train.corpus.ingest import IngestStats, ingest, read_instaloader

WHEN = int(datetime(2024, 5, 1, 12, 10, 45, tzinfo=UTC).timestamp())
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200), (200, 30, 200)]


class OfflineLoader(instaloader.Instaloader):
    """instaloader with its picture download replaced by writing the JPEG registered for the URL."""

    def __init__(self, root: Path, pictures: dict[str, bytes], **kw: Any) -> None:
        super().__init__(quiet=True, dirname_pattern=str(root / "{target}"), download_videos=False,
                         download_geotags=False, download_comments=False, **kw)
        self.pictures = pictures

    def download_pic(self, filename: str, url: str, mtime: datetime,
                     filename_suffix: str | None = None) -> bool:
        if filename_suffix is not None:
            filename += "_" + filename_suffix
        path = Path(filename + ".jpg")
        if path.is_file():  # as instaloader does: a picture already there is kept
            return False
        path.write_bytes(self.pictures[url])
        os.utime(path, (mtime.timestamp(), mtime.timestamp()))
        return True


def _jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG", quality=95)
    return out.getvalue()


def _colour(path: Path) -> tuple[int, int, int]:
    with Image.open(path) as img:
        pixel = img.convert("RGB").getpixel((32, 24))
    return min(COLOURS, key=lambda c: sum(abs(a - b) for a, b in zip(c, pixel, strict=True)))


def _node(code: str, user: str, caption: str, urls: list[str], *, when: int = WHEN,
          code_key: str = "shortcode") -> dict[str, Any]:
    node: dict[str, Any] = {
        "__typename": "GraphSidecar" if len(urls) > 1 else "GraphImage",
        code_key: code, "id": str(abs(hash(code)) % 10**12), "taken_at_timestamp": when, "is_video": False,
        "display_url": urls[0], "owner": {"id": str(abs(hash(user)) % 10**6), "username": user},
        "edge_media_to_caption": {"edges": [{"node": {"text": caption}}]},
    }
    if len(urls) > 1:
        node["edge_sidecar_to_children"] = {"edges": [{"node": {"is_video": False, "display_url": u}}
                                                      for u in urls]}
    return node


class Downloads:
    """Posts saved by instaloader under ``root/<target>``; each picture's colour names its post."""

    def __init__(self, root: Path, pattern: str) -> None:
        self.root = root
        self.pictures: dict[str, bytes] = {}
        self.loader = OfflineLoader(root, self.pictures, filename_pattern=pattern)
        self.expected: dict[str, tuple[str, list[tuple[int, int, int]]]] = {}  # id -> caption, colours
        self.n = 0

    def post(self, code: str, user: str, caption: str, pictures: int = 1, target: str = "#barcelona",
             **kw: Any) -> None:
        urls = []
        colours = []
        for _ in range(pictures):
            colour = COLOURS[self.n % len(COLOURS)]
            url = f"https://scontent.example/v/t51/{1000 + self.n}_{self.n}_n.jpg?stp=dst&se=7"
            self.pictures[url] = _jpeg(colour)
            urls.append(url)
            colours.append(colour)
            self.n += 1
        node = _node(code, user, caption, urls, **kw)
        self.loader.download_post(instaloader.Post(self.loader.context, node), target=target)
        self.expected[code] = (caption, colours)

    def read(self) -> tuple[dict[str, tuple[str, list[tuple[int, int, int]]]], IngestStats]:
        stats = IngestStats()
        got: dict[str, tuple[str, list[tuple[int, int, int]]]] = {}
        for p in read_instaloader(self.root, stats):
            code = str(p.source["shortcode"])
            caption, colours = got.setdefault(code, (p.caption, []))
            assert caption == p.caption
            colours.append(_colour(p.image))
        return got, stats


PATTERNS = ["{date_utc}_UTC", "{date_utc}_UTC_{profile}", "{shortcode}", "{profile}_{shortcode}",
            "{date_utc}_UTC_{shortcode}", "{filename}"]


@pytest.mark.parametrize("pattern", PATTERNS)
def test_each_documented_pattern_pairs_captions_with_their_own_photos(pattern: str, tmp_path: Path) -> None:
    d = Downloads(tmp_path, pattern)
    d.post("Cx_1", "maria", "Vermut a la Barceloneta #bcn", when=WHEN)
    d.post("Dy-9_2", "joan", "Tres fotos del Born", pictures=3, when=WHEN + 60)
    d.post("Ez", "anna", "Sunset at Bunkers del Carmel", when=WHEN + 120)
    got, stats = d.read()
    assert got == d.expected, pattern
    assert not stats.bad and stats.notes["layout"] == pattern and stats.notes["unpaired_images"] == 0
    posts, _ = ingest(IngestConfig(tmp_path, "instaloader"))
    ids = sorted(p.id for p in posts)
    assert ids == ["Cx_1", "Dy-9_2_1", "Dy-9_2_2", "Dy-9_2_3", "Ez"]
    first = next(p for p in posts if p.id == "Cx_1")
    assert first.user == "maria" and first.taken_at == "2024-05-01T12:10:45Z"


def test_posts_of_the_same_second_never_get_another_posts_caption(tmp_path: Path) -> None:
    # The default pattern names both posts' files alike: instaloader keeps the first one's photo and the
    # second one's metadata. Neither is read, and the skipped files are counted and said why.
    d = Downloads(tmp_path / "default", "{date_utc}_UTC")
    d.post("Aaa", "maria", "First post of this second", when=WHEN)
    d.post("Bbb", "joan", "Second post of this second", when=WHEN)
    d.post("Ccc", "anna", "A post a minute later", when=WHEN + 60)
    got, stats = d.read()
    assert got == {"Ccc": d.expected["Ccc"]}
    assert stats.bad == {"uncertain_pairing": 1} and "one second" in stats.examples[0]
    # Two sidecars of one second: the second's pictures were never saved, its metadata names fewer.
    d = Downloads(tmp_path / "sidecars", "{date_utc}_UTC")
    d.post("Ddd", "maria", "Three pictures", pictures=3, when=WHEN)
    d.post("Eee", "joan", "Two pictures", pictures=2, when=WHEN)
    got, stats = d.read()
    assert got == {} and sum(stats.bad.values()) == 1
    # With the shortcode in the pattern (the README's command) every post of that second is read.
    d = Downloads(tmp_path / "shortcode", "{date_utc}_UTC_{shortcode}")
    d.post("Aaa", "maria", "First post of this second", when=WHEN)
    d.post("Bbb", "joan", "Second post of this second", pictures=2, when=WHEN)
    got, stats = d.read()
    assert got == d.expected and not stats.bad
    # Different owners in one second under {date_utc}_UTC_{profile}: different names, both read.
    d = Downloads(tmp_path / "profile", "{date_utc}_UTC_{profile}")
    d.post("Aaa", "maria", "One", when=WHEN)
    d.post("Bbb", "joan", "Two", when=WHEN)
    assert d.read()[0] == d.expected


def test_nodes_with_code_keep_their_id_and_a_post_saved_twice_is_read_once(tmp_path: Path) -> None:
    d = Downloads(tmp_path, "{date_utc}_UTC")
    d.post("Kq3", "maria", "Saved under two hashtags", target="#barcelona", code_key="code")
    d.post("Kq3", "maria", "Saved under two hashtags", target="#bcn", code_key="code")
    d.post("Zz", "joan", "Only here", target="#bcn", when=WHEN + 5, code_key="code")
    got, stats = d.read()
    assert set(got) == {"Kq3", "Zz"} and got["Zz"] == d.expected["Zz"]
    assert stats.notes["duplicate_posts"] == 1 and not stats.bad
    posts, _ = ingest(IngestConfig(tmp_path, "instaloader"))
    assert sorted(p.id for p in posts) == ["Kq3", "Zz"]


def test_files_that_are_no_post_are_left_alone(tmp_path: Path) -> None:
    d = Downloads(tmp_path, "{date_utc}_UTC")
    d.post("Aaa", "maria", "A post")
    folder = tmp_path / "#barcelona"
    stem = f"{datetime.fromtimestamp(WHEN, tz=UTC):%Y-%m-%d_%H-%M-%S}_UTC"
    (folder / f"{stem}_profile_pic.jpg").write_bytes(_jpeg(COLOURS[5]))
    (folder / f"{stem}_location.txt").write_text("Barcelona\n41.38, 2.17\n", encoding="utf-8")
    (folder / f"{stem}_comments.json").write_text("[]", encoding="utf-8")
    profile = instaloader.Profile(d.loader.context, {"id": "1", "username": "maria"})
    instaloader.save_structure_to_file(profile, str(folder / "maria_1.json.xz"))
    got, stats = d.read()
    assert got == d.expected and not stats.bad and stats.notes["unpaired_images"] == 1


def test_a_folder_without_metadata_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "#barcelona").mkdir()
    for i in range(3):
        (tmp_path / "#barcelona" / f"IMG_{i}.jpg").write_bytes(_jpeg(COLOURS[i]))
    with pytest.raises(ValueError, match="no instaloader metadata") as info:
        list(read_instaloader(tmp_path, IngestStats()))
    assert "\n" not in str(info.value) and "--no-metadata-json" in str(info.value)


def test_caption_files_without_metadata_are_posts(tmp_path: Path) -> None:
    folder = tmp_path / "#barcelona"
    folder.mkdir()
    (folder / "2024-05-01_12-10-45_UTC.jpg").write_bytes(_jpeg(COLOURS[0]))
    (folder / "2024-05-01_12-10-45_UTC.txt").write_text("Only a caption file\n", encoding="utf-8")
    posts, stats = ingest(IngestConfig(tmp_path, "instaloader"))
    assert [(p.id, p.caption, p.taken_at) for p in posts] == [
        ("#barcelona/2024-05-01_12-10-45_UTC", "Only a caption file", "2024-05-01T12:10:45Z")]
    assert stats.notes["layout"] == "caption file without metadata"
