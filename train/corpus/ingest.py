"""Corpus readers: Flickr8k, an instaloader download folder, or a ``posts.jsonl``, all yielding ``Post``.

Readers stream; a bad record (missing image, unreadable JSON, a line without the needed fields) is
counted in an :class:`IngestStats` and logged, never fatal. Decoding every image is left to the filter
stage, which checks only the posts it keeps.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from train.config import IngestConfig
from train.corpus.posts import Post
from train.progress import ProgressCallback

log = logging.getLogger(__name__)

FLICKR_TOKENS = "Flickr8k.token.txt"
FLICKR_SPLITS = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
POSTS_FILE = "posts.jsonl"
_MAX_EXAMPLES = 20


@dataclass
class IngestStats:
    """What the reader met: posts yielded and bad records by kind (with a few examples)."""

    posts: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    # What the reader found besides bad records (instaloader: the file-name pattern, pictures of no post).
    notes: dict[str, Any] = field(default_factory=dict)

    def count(self, kind: str, where: str) -> None:
        """Count one bad record of ``kind`` and remember where it was."""
        self.bad[kind] += 1
        if len(self.examples) < _MAX_EXAMPLES:
            self.examples.append(f"{kind}: {where}")
        log.warning("skipping bad record (%s): %s", kind, where)

    def as_dict(self) -> dict[str, Any]:
        """JSON form for the filter report."""
        out = {"posts": self.posts, "bad": dict(self.bad), "examples": list(self.examples)}
        return {**out, "notes": dict(self.notes)} if self.notes else out


def _image_ok(path: Path, stats: IngestStats) -> bool:
    """Cheap existence check; the filter stage decodes."""
    if not path.is_file():
        stats.count("missing_image", str(path))
        return False
    return True


def _split_lists(root: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for split, name in FLICKR_SPLITS.items():
        path = root / name
        if path.is_file():
            for line in path.read_text(encoding="utf-8").split():
                out[line.strip()] = split
    return out


def read_flickr8k(root: Path, stats: IngestStats) -> Iterator[Post]:
    """One post per Flickr8k image: the five captions, their joined text, and the standard split."""
    token_file = root / FLICKR_TOKENS
    if not token_file.is_file():
        raise FileNotFoundError(f"{token_file} not found: is {root} a Flickr8k folder?")
    captions: dict[str, list[str]] = defaultdict(list)
    with token_file.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            name, tab, text = line.rstrip("\n").partition("\t")
            if not tab or "#" not in name:
                if line.strip():
                    stats.count("bad_record", f"{token_file.name}:{n}")
                continue
            captions[name.split("#", 1)[0]].append(text.strip())
    splits = _split_lists(root)
    images = root / "images" if (root / "images").is_dir() else root
    for name, caps in captions.items():
        image = images / name
        if not _image_ok(image, stats):
            continue
        caps_t = tuple(c for c in caps if c)
        joined = ". ".join(c.rstrip(" .") for c in caps_t)
        yield Post(
            id=name,
            image=image.resolve(),
            caption=joined,
            split=splits.get(name),
            captions=caps_t,
            source={"format": "flickr8k"},
        )


def read_instaloader(root: Path, stats: IngestStats) -> Iterator[Post]:
    """Posts of an instaloader download folder, whatever its file-name pattern (:mod:`.instaloader`)."""
    from train.corpus.instaloader import read_folder

    return read_folder(root, stats)


def read_jsonl(path: Path, stats: IngestStats) -> Iterator[Post]:
    """Posts of a ``posts.jsonl``: ``{id, image, caption, user, taken_at}`` (+ ``lang``, ``split``)."""
    if path.is_dir():
        path = path / POSTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found")
    base = path.parent
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{n}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                stats.count("bad_json", where)
                continue
            if not isinstance(row, dict) or not row.get("image"):
                stats.count("bad_record", where)
                continue
            image = Path(row["image"])
            image = image if image.is_absolute() else base / image
            if not _image_ok(image, stats):
                continue
            caps = row.get("captions")
            yield Post(
                id=str(row.get("id") or image.stem),
                image=image.resolve(),
                caption=row.get("caption") or "",
                user=row.get("user"),
                taken_at=row.get("taken_at"),
                lang=row.get("lang"),
                split=row.get("split"),
                captions=tuple(caps) if isinstance(caps, list) else (),
                source={"format": "jsonl", "line": n, "lang_given": row.get("lang")},
            )


def read_corpus(cfg: IngestConfig, stats: IngestStats) -> Iterator[Post]:
    """The reader for ``cfg.format``, cut at ``cfg.limit``."""
    readers = {"flickr8k": read_flickr8k, "instaloader": read_instaloader, "jsonl": read_jsonl}
    if cfg.format not in readers:
        raise ValueError(f"unknown corpus format {cfg.format!r}; use one of {', '.join(readers)}")
    for i, post in enumerate(readers[cfg.format](cfg.corpus, stats)):
        if cfg.limit is not None and i >= cfg.limit:
            return
        stats.posts += 1
        yield post


def ingest(cfg: IngestConfig, progress: ProgressCallback | None = None) -> tuple[list[Post], IngestStats]:
    """Read the whole corpus with a progress bar; return the posts and the bad-record counts."""
    stats = IngestStats()
    posts: list[Post] = []
    stream: Iterable[Post] = read_corpus(cfg, stats)
    if progress is None:
        stream = tqdm(stream, desc="ingest", unit="posts", leave=False)
    for post in stream:
        posts.append(post)
        if progress is not None and len(posts) % 200 == 0:
            progress("ingest", len(posts), None, "posts")
    if progress is not None:
        progress("ingest", len(posts), len(posts), "posts")
    log.info(
        "ingested %d posts from %s (%s); bad records: %s",
        len(posts),
        cfg.corpus,
        cfg.format,
        dict(stats.bad) or "none",
    )
    return posts, stats


def post_to_dict(post: Post) -> dict[str, Any]:
    """A post as one JSON object (the work dir's posts files)."""
    return {
        "id": post.id,
        "image": str(post.image),
        "caption": post.caption,
        "user": post.user,
        "taken_at": post.taken_at,
        "lang": post.lang,
        "split": post.split,
        "captions": list(post.captions),
        "source": dict(post.source),
    }


def post_from_dict(row: dict[str, Any]) -> Post:
    """Inverse of :func:`post_to_dict`."""
    return Post(
        id=row["id"],
        image=Path(row["image"]),
        caption=row.get("caption") or "",
        user=row.get("user"),
        taken_at=row.get("taken_at"),
        lang=row.get("lang"),
        split=row.get("split"),
        captions=tuple(row.get("captions") or ()),
        source=row.get("source") or {},
    )


def save_posts(posts: Iterable[Post], path: Path) -> None:
    """Write posts as JSON lines (atomically: a killed run leaves no half file)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for post in posts:
            f.write(json.dumps(post_to_dict(post), ensure_ascii=False) + "\n")
    tmp.replace(path)


def load_posts(path: Path) -> list[Post]:
    """Read posts written by :func:`save_posts`."""
    with path.open(encoding="utf-8") as f:
        return [post_from_dict(json.loads(line)) for line in f if line.strip()]
