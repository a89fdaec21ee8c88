"""Corpus readers: Flickr8k, an instaloader download folder, or a ``posts.jsonl``, all yielding ``Post``.

Readers stream; a bad record (missing image, unreadable JSON, a line without the needed fields, a
line that is not UTF-8, JSON nested too deep, a line over :data:`MAX_LINE_BYTES`) is counted in an
:class:`IngestStats` and logged, never fatal. Decoding every image is left to the filter stage, which checks
only the posts it keeps. Text that UTF-8 cannot hold (a lone surrogate from a JSON escape) is replaced
(:func:`~train.corpus.posts.clean_text`), so the posts can always be saved.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from train.config import IngestConfig
from train.corpus.posts import Post, clean_text
from train.progress import ProgressCallback, throttled

log = logging.getLogger(__name__)

FLICKR_TOKENS = "Flickr8k.token.txt"
FLICKR_SPLITS = {
    "train": "Flickr_8k.trainImages.txt",
    "val": "Flickr_8k.devImages.txt",
    "test": "Flickr_8k.testImages.txt",
}
POSTS_FILE = "posts.jsonl"
_MAX_EXAMPLES = 20
MAX_LINE_BYTES = 1 << 20  # a post is a few hundred bytes; a longer line is read no further than this
# What one record's content can raise while it is parsed (RecursionError: "[[[[…" a thousand deep).
_RECORD_ERRORS = (ValueError, RecursionError, TypeError, UnicodeError, OverflowError)


@dataclass
class IngestStats:
    """What the reader met: posts yielded and bad records by kind (with a few examples)."""

    posts: int = 0
    bad: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    # What the reader found besides bad records (instaloader: the file-name pattern, pictures of no post).
    notes: dict[str, Any] = field(default_factory=dict)
    # Told (done, total, unit) by a reader that reads the whole corpus before its first post (instaloader:
    # every metadata file), so a long read is not a bar stuck at zero.
    reading: Callable[[int, int, str], None] | None = field(default=None, compare=False, repr=False)

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
    try:
        found = path.is_file()
    except (OSError, ValueError):  # a name the file system cannot take (a NUL byte, a lone surrogate)
        found = False
    if not found:
        stats.count("missing_image", ascii(str(path)))
        return False
    return True


def _lines(path: Path, stats: IngestStats) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a text file, each line cut at :data:`MAX_LINE_BYTES` (the rest of a longer
    line is skipped and the line counted as a bad record)."""
    with path.open("rb") as f:
        n = 0
        while line := f.readline(MAX_LINE_BYTES + 1):
            n += 1
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := f.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                stats.count("bad_record", f"{path.name}:{n} (a line over {MAX_LINE_BYTES >> 20} MB)")
                continue
            yield n, line


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
    for n, raw in _lines(token_file, stats):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats.count("bad_record", f"{token_file.name}:{n} (not UTF-8)")
            continue
        name, tab, text = line.rstrip("\r\n").partition("\t")
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
    base, resolve = path.parent, _Resolver()
    for n, line in _lines(path, stats):
        if not line.strip():
            continue
        where = f"{path.name}:{n}"
        try:
            row = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError:
            stats.count("bad_record", f"{where} (not UTF-8)")
            continue
        except _RECORD_ERRORS as exc:
            stats.count("bad_json", f"{where} ({exc.__class__.__name__})")
            continue
        if not isinstance(row, dict) or not row.get("image") or not isinstance(row["image"], str):
            stats.count("bad_record", where)
            continue
        try:
            post = _jsonl_post(row, base, n, resolve)
        except _RECORD_ERRORS as exc:
            stats.count("bad_record", f"{where} ({exc.__class__.__name__})")
            continue
        if _image_ok(post.image, stats):
            yield post


class _Resolver:
    """Resolved image paths at the cost of one ``lstat`` a photo: each folder is resolved once (a path's
    full resolution walks every component, a third of reading 600,000 posts), the file itself only when it
    is a link."""

    def __init__(self) -> None:
        self._folders: dict[Path, Path] = {}

    def __call__(self, image: Path) -> Path:
        if image.name in ("", ".", ".."):
            return image.resolve()
        folder = self._folders.get(image.parent)
        if folder is None:
            folder = self._folders[image.parent] = image.parent.resolve()
        out = folder / image.name
        return out.resolve() if out.is_symlink() else out


def _text_or_none(value: Any) -> str | None:
    return clean_text(str(value)) if value is not None and value != "" else None


def _jsonl_post(row: dict[str, Any], base: Path, n: int, resolve: _Resolver) -> Post:
    """One posts.jsonl row as a post (its image not yet checked)."""
    image = Path(row["image"])
    image = image if image.is_absolute() else base / image
    caps = row.get("captions")
    caption = row.get("caption")
    return Post(
        id=clean_text(str(row.get("id") or image.stem)),
        image=resolve(image),
        caption=clean_text(caption) if isinstance(caption, str) else "",
        user=_text_or_none(row.get("user")),
        taken_at=_text_or_none(row.get("taken_at")),
        lang=_text_or_none(row.get("lang")),
        split=_text_or_none(row.get("split")),
        captions=tuple(clean_text(c) for c in caps if isinstance(c, str)) if isinstance(caps, list) else (),
        source={"format": "jsonl", "line": n, "lang_given": _text_or_none(row.get("lang"))},
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
    report = throttled(progress)
    if report is not None:
        stats.reading = lambda done, total, unit: report("ingest", done, total, unit)
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
            row = post_to_dict(post)
            try:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
            except UnicodeEncodeError:
                # A string UTF-8 cannot hold (a lone surrogate, a file name's undecodable byte): its JSON
                # escape is still a line load_posts reads back into the same string.
                f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def load_posts(path: Path) -> list[Post]:
    """Read posts written by :func:`save_posts`."""
    with path.open(encoding="utf-8") as f:
        return [post_from_dict(json.loads(line)) for line in f if line.strip()]
