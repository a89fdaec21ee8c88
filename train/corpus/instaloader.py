"""An instaloader download folder, whatever ``--filename-pattern`` named its files: posts from their metadata.

instaloader writes, for a post whose pattern gives the file stem ``S``: ``S.json.xz`` (or ``S.json``: the
post's node), ``S.txt`` (its caption) and ``S.jpg`` — or ``S_1.jpg``, ``S_2.jpg``… for the pictures of a
multi-image ("sidecar") post. Every pattern it documents (``{date_utc}_UTC``, the default;
``{date_utc}_UTC_{profile}``; ``{shortcode}``; ``{profile}_{shortcode}``…) keeps that rule, so the reader
starts from each metadata file, reads the post's id, caption, owner and date from the node, and takes the
pictures its stem names; the node says whether the post is one picture or a sidecar and of how many. A
picture two posts would claim (two posts of one second under a date-only pattern) goes to neither, so a
caption is never paired with another post's photo. A caption file with pictures and no metadata (a
folder saved with ``--no-metadata-json``) is a post too. The pattern the file names follow is logged and
kept in the ingest report (``notes.layout``).

The folder is listed once (one ``os.scandir`` a directory) and indexed by stem, so reading it costs
O(N) however many posts it holds. A folder is input from outside: symbolic links are neither followed nor
read (a ``.txt`` link to any file would otherwise become a public caption), a metadata file is decompressed
only up to :data:`MAX_METADATA_BYTES` and a caption file read only up to :data:`MAX_CAPTION_BYTES`, and any
file that cannot be read or parsed is a counted bad record, never the end of the ingest.
"""

from __future__ import annotations

import json
import logging
import lzma
import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tqdm import tqdm

from train.corpus.posts import Post, clean_text

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # train.corpus.ingest reads the same kinds
# A post's metadata is a few kilobytes (instaloader's largest, a sidecar's, about 100 KB); more is no post
# but a decompression bomb or another program's file.
MAX_METADATA_BYTES = 8 << 20
MAX_CAPTION_BYTES = 1 << 20  # Instagram caps captions at 2,200 characters
_NUMBERED = re.compile(r"^(.*)_(\d+)$")  # a sidecar's picture: <stem>_<n>
_OLD = "_old_"  # instaloader's renamed earlier caption: <stem>_old_<nn>.txt
DATE_FORMAT = "%Y-%m-%d_%H-%M-%S"  # instaloader's {date_utc}
_DATE_STEM = re.compile(r"^(\d{4}-\d{2}-\d{2}_\d{2}-\d{2}-\d{2})_UTC")
_TYPES = {1: "GraphImage", 2: "GraphVideo", 8: "GraphSidecar"}  # the iPhone API's media_type
# instaloader's documented patterns, as functions of what a node says; the first that names a post's files
# is the one reported.
PATTERNS: dict[str, str] = {
    "{date_utc}_UTC": "{date}_UTC",
    "{date_utc}_UTC_{profile}": "{date}_UTC_{profile}",
    "{profile}_{date_utc}_UTC": "{profile}_{date}_UTC",
    "{date_utc}_UTC_{shortcode}": "{date}_UTC_{shortcode}",
    "{shortcode}": "{shortcode}",
    "{profile}_{shortcode}": "{profile}_{shortcode}",
    "{target}_{shortcode}": "{target}_{shortcode}",
    "{mediaid}": "{mediaid}",
}


@dataclass
class Folder:
    """The files of one directory by kind, keyed by stem (the name without its suffixes), indexed once.

    File names, not paths, are kept (a path object per file costs several times its name at 600,000
    posts); :meth:`path` joins one when a post needs it.
    """

    directory: Path
    images: dict[str, str] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    # stem -> its numbered pictures [(n, name)], sorted: the pictures of a sidecar post named <stem>_<n>.
    numbered: dict[str, list[tuple[int, str]]] = field(default_factory=dict)
    # stems some caption file <stem>_old_<nn> was renamed from.
    renamed_captions: set[str] = field(default_factory=set)

    def path(self, name: str) -> Path:
        """The path of one of this folder's files."""
        return self.directory / name

    def index(self) -> None:
        """Index the numbered pictures and renamed captions (once, after listing)."""
        numbered: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for stem, name in self.images.items():
            m = _NUMBERED.match(stem)
            if m:
                numbered[m.group(1)].append((int(m.group(2)), name))
        self.numbered = {stem: sorted(found) for stem, found in numbered.items()}
        renamed: set[str] = set()
        for stem in self.captions:
            start = stem.find(_OLD)
            while start > 0:
                renamed.add(stem[:start])
                start = stem.find(_OLD, start + 1)
        self.renamed_captions = renamed


@dataclass(frozen=True)
class Node:
    """What a metadata file says of one post (any of the node shapes instaloader has written)."""

    shortcode: str | None
    typename: str | None
    children: tuple[str, ...]  # the sidecar pictures' URLs ("" when unknown); () for a single picture
    caption: str | None
    user: str | None
    timestamp: float | None
    media_id: str | None
    url: str | None


def _text(value: Any) -> str | None:
    if isinstance(value, dict):  # the iPhone API's {"text": ...}
        value = value.get("text")
    return value if isinstance(value, str) else None


def _first(*values: Any) -> Any:
    return next((v for v in values if v not in (None, "", {}, [])), None)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def parse_node(node: dict[str, Any]) -> Node:
    """A post's node as instaloader saves it: GraphQL (``shortcode``, ``edge_…``) or iPhone (``code``, …)."""
    iphone = _dict(node.get("iphone_struct"))
    owner = _dict(node.get("owner"))
    user = _dict(node.get("user")) or _dict(iphone.get("user"))
    edges = _dict(node.get("edge_media_to_caption")).get("edges") or []
    caption = _text(_dict(_dict(edges[0]).get("node")).get("text")) if edges else None
    caption = caption if caption is not None else _text(node.get("caption")) or _text(iphone.get("caption"))
    typename = node.get("__typename") or _TYPES.get(node.get("media_type") or iphone.get("media_type") or 0)
    sidecar = _dict(node.get("edge_sidecar_to_children")).get("edges") or []
    children = [str(_dict(_dict(e).get("node")).get("display_url") or "") for e in sidecar]
    if not children:
        children = ["" for _ in node.get("carousel_media") or iphone.get("carousel_media") or []]
    username = _first(owner.get("username"), user.get("username"),
                      _dict(owner.get("iphone_struct")).get("username"))
    owner_id = _first(owner.get("id"), user.get("pk"), user.get("id"))
    stamp = _first(node.get("taken_at_timestamp"), node.get("date"), node.get("taken_at"),
                   iphone.get("taken_at"))
    media_id = _first(node.get("id"), node.get("pk"))
    return Node(
        shortcode=_first(node.get("shortcode"), node.get("code"), iphone.get("code")),
        typename=typename if isinstance(typename, str) else None,
        children=tuple(children) if typename == "GraphSidecar" or len(children) > 1 else (),
        caption=caption,
        user=str(username) if username else (str(owner_id) if owner_id is not None else None),
        timestamp=float(stamp) if isinstance(stamp, int | float) else None,
        media_id=str(media_id) if media_id is not None else None,
        url=_first(node.get("display_url"), node.get("display_src")),
    )


def read_capped(path: Path, limit: int) -> bytes:
    """At most ``limit`` bytes of ``path`` (decompressed, for ``.xz``); ValueError when it holds more.

    Opened without following a symbolic link (``O_NOFOLLOW``): the file listed is the file read.
    """
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with open(fd, "rb") as raw:
        if path.suffix == ".xz":
            with lzma.open(raw, "rb") as f:
                data = f.read(limit + 1)
        else:
            data = raw.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"over {limit >> 20} MB")
    return data


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The post node of a metadata file; None for other files instaloader writes (profiles, comments…).

    Raises ValueError (or an OSError/LZMAError/RecursionError) for a file that is not readable JSON, or
    that holds (decompressed) more than :data:`MAX_METADATA_BYTES`.
    """
    payload = json.loads(read_capped(path, MAX_METADATA_BYTES).decode("utf-8"))
    if not isinstance(payload, dict):
        if path.name.endswith("_comments.json"):
            return None
        raise ValueError("not a JSON object")
    kind = _dict(payload.get("instaloader")).get("node_type")
    if kind is not None and kind != "Post":
        return None  # a Profile, Hashtag, StoryItem or resume file
    node = payload.get("node") if "node" in payload else payload if "shortcode" in payload else None
    if not isinstance(node, dict):
        return None
    if not any(k in node for k in ("shortcode", "code", "__typename", "taken_at_timestamp", "date")):
        return None
    return node


# What reading one untrusted file can raise (RecursionError: JSON nested a thousand deep).
READ_ERRORS = (OSError, EOFError, lzma.LZMAError, ValueError, UnicodeDecodeError, RecursionError)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # the file system's undecodable bytes, kept as lone surrogates
        return False
    return True


def _list(directory: Path, stats: Any) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return sorted(it, key=lambda e: e.name)
    except OSError as exc:
        stats.count("unreadable_folder", f"{directory} ({exc.__class__.__name__})")
        return []


def scan(root: Path, stats: Any) -> dict[Path, Folder]:
    """Every folder under ``root`` with its pictures, captions and metadata files by stem: one listing of
    each directory; symbolic links are skipped (counted in ``stats.notes["symlinks_skipped"]``)."""
    folders: dict[Path, Folder] = {}
    pending = [root]
    skipped: list[str] = []
    while pending:
        directory = pending.pop()
        folder = Folder(directory)
        for entry in _list(directory, stats):
            name = entry.name
            if name.startswith("."):
                continue
            if not _utf8(name):
                stats.count("bad_file_name", f"{entry.path!a} (not UTF-8)")
                continue
            try:
                if entry.is_symlink():
                    skipped.append(entry.path)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                    continue
                if not entry.is_file(follow_symlinks=False):
                    continue
            except OSError:
                continue
            lower = name.lower()
            if name.endswith(".json.xz"):
                folder.metadata[name[: -len(".json.xz")]] = name
            elif name.endswith(".json"):
                folder.metadata[name[: -len(".json")]] = name
            elif lower.endswith(".txt"):
                folder.captions[name[:-4]] = name
            else:
                stem, dot, suffix = name.rpartition(".")
                if dot and "." + suffix.lower() in IMAGE_SUFFIXES:
                    folder.images.setdefault(stem, name)
        if folder.images or folder.captions or folder.metadata:
            folder.index()
            folders[directory] = folder
    if skipped:
        stats.notes["symlinks_skipped"] = len(skipped)
        log.warning("skipped %d symbolic links in %s (never followed: a link may point anywhere), e.g. %s",
                    len(skipped), root, skipped[0])
    return dict(sorted(folders.items()))


def _url_stem(url: str | None) -> str:
    return Path(urlparse(url or "").path).stem


def post_pictures(folder: Folder, stem: str, node: Node | None) -> list[tuple[int, Path]]:
    """The pictures of the post whose files are named ``stem``: (index, path), index 0 for a single one."""
    if node is None or not node.children:
        if stem in folder.images:
            return [(0, folder.path(folder.images[stem]))]
        if node is not None and node.typename in ("GraphImage", "GraphVideo"):
            return []
    found = [(k, folder.path(name)) for k, name in folder.numbered.get(stem, ())]
    if node is not None and node.children:
        found = [(k, p) for k, p in found if 1 <= k <= len(node.children)]
        if not found and node.url and _url_stem(node.url) in stem:
            # --filename-pattern with {filename}: each picture is named after its own URL.
            own = _url_stem(node.url)
            named = (folder.images.get(stem.replace(own, _url_stem(u))) if u else None for u in node.children)
            found = [(k, folder.path(n)) for k, n in enumerate(named, 1) if n is not None]
    return found


def _layout(stem: str, node: Node, target: str) -> str | None:
    """The documented pattern that gives this post's file stem, if any."""
    date = datetime.fromtimestamp(node.timestamp, tz=UTC).strftime(DATE_FORMAT) if node.timestamp else None
    values = {"date": date, "profile": (node.user or "").lower() or None, "shortcode": node.shortcode,
              "mediaid": node.media_id, "target": target}
    if node.url and stem == _url_stem(node.url):
        return "{filename}"
    for name, template in PATTERNS.items():
        needed = re.findall(r"{(\w+)}", template)
        if all(values.get(k) for k in needed) and template.format(**values).replace("/", "\u2215") == stem:
            return name
    return None


@dataclass
class _Candidate:
    key: str  # folder-relative stem: unique in the corpus
    stem: str
    folder: Folder
    node: Node | None
    caption_file: Path | None
    pictures: list[tuple[int, Path]]
    doubt: str | None = None  # why these files may hold two posts (then none of them is read)


def _taken_at(node: Node | None, stem: str) -> str | None:
    if node is not None and node.timestamp is not None:
        return datetime.fromtimestamp(node.timestamp, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    m = _DATE_STEM.match(stem)
    return datetime.strptime(m.group(1), DATE_FORMAT).strftime("%Y-%m-%dT%H:%M:%SZ") if m else None


# What one record's odd values can raise (a timestamp in the year 10^12, a caption edge that is a number…).
_RECORD_ERRORS = (*READ_ERRORS, TypeError, AttributeError, KeyError, IndexError, OverflowError)


def read_folder(root: Path, stats: Any) -> Iterator[Post]:
    """Posts of an instaloader folder (``stats`` is the reader's :class:`train.corpus.ingest.IngestStats`)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    root = root.resolve()  # once: no link below it is followed, so every path under it is resolved too
    folders = scan(root, stats)
    candidates: list[_Candidate] = []
    layouts: Counter[str] = Counter()
    total = sum(len(folder.metadata) for folder in folders.values())
    bar = tqdm(total=total, desc="metadata", unit="files", leave=False, disable=stats.reading is not None)
    read = 0
    for directory, folder in folders.items():
        for stem, meta_name in folder.metadata.items():
            read += 1
            bar.update()
            if stats.reading is not None:
                stats.reading(read, total, "metadata files")
            meta_path = folder.path(meta_name)
            try:
                raw = read_metadata(meta_path)
                if raw is None:
                    continue
                node = parse_node(raw)
                layout = _layout(stem, node, directory.name) or "custom"
            except _RECORD_ERRORS as exc:
                stats.count("bad_json", f"{meta_path} ({exc.__class__.__name__})")
                continue
            layouts[layout] += 1
            caption_file = folder.captions.get(stem)
            candidates.append(_Candidate(_key(root, directory, stem), stem, folder, node,
                                         folder.path(caption_file) if caption_file else None,
                                         post_pictures(folder, stem, node), _doubt(folder, stem, node)))
        for stem, caption_name in folder.captions.items():
            if stem in folder.metadata:
                continue
            pictures = post_pictures(folder, stem, None)
            if pictures:  # geotag files, caption backups and notes have no pictures of their own
                layouts["caption file without metadata"] += 1
                candidates.append(_Candidate(_key(root, directory, stem), stem, folder, None,
                                             folder.path(caption_name), pictures))
    bar.close()
    _report(root, folders, candidates, layouts, stats)
    yield from _posts(candidates, stats)


def _doubt(folder: Folder, stem: str, node: Node) -> str | None:
    """Why the files named ``stem`` may mix two posts: under a pattern without the shortcode, two posts of
    one second get one name; instaloader then keeps the first one's pictures (the second's "exist") but the
    second one's metadata, and renames the first caption to ``<stem>_old_NN.txt``."""
    if node.shortcode and node.shortcode in stem:
        return None  # the name is this post's own: an _old_ caption is an edit by its author
    if stem in folder.renamed_captions:
        return "its caption changed between downloads: two posts of one second may share the name"
    extra = [name for k, name in folder.numbered.get(stem, ()) if k > len(node.children)]
    if node.children and extra:
        return (f"more pictures ({extra[0].rpartition('.')[0]}) than its metadata names: two posts of one "
                "second may share it")
    return None


def _key(root: Path, directory: Path, stem: str) -> str:
    return (directory / stem).relative_to(root).as_posix()


def _posts(candidates: list[_Candidate], stats: Any) -> Iterator[Post]:
    claims: Counter[Path] = Counter(p for c in candidates for _, p in c.pictures)
    seen: set[str] = set()
    for c in candidates:
        if c.doubt is not None:
            stats.count("uncertain_pairing", f"{c.key}: {c.doubt} (skipped; README: instaloader)")
            continue
        shared = [p for _, p in c.pictures if claims[p] > 1]
        for path in shared:
            stats.count("ambiguous_image", f"{path} (named by two posts: paired with neither)")
        pictures = [(n, p) for n, p in c.pictures if claims[p] == 1]
        if not pictures:
            if not shared:
                stats.count("missing_image", f"{c.key}.jpg")
            continue
        node = c.node
        post_id = node.shortcode if node is not None and node.shortcode else c.key
        if post_id in seen:  # the same post saved twice (e.g. under two hashtags)
            stats.notes["duplicate_posts"] = stats.notes.get("duplicate_posts", 0) + 1
            continue
        seen.add(post_id)
        caption = node.caption if node is not None else None
        if caption is None and c.caption_file is not None:
            try:
                caption = read_capped(c.caption_file, MAX_CAPTION_BYTES).decode("utf-8").strip()
            except READ_ERRORS as exc:
                stats.count("bad_caption_file", f"{c.caption_file} ({exc.__class__.__name__})")
        try:
            taken_at = _taken_at(node, c.stem)
        except _RECORD_ERRORS:
            taken_at = None
        for n, image in pictures:
            yield Post(
                id=clean_text(post_id if len(c.pictures) == 1 else f"{post_id}_{n or 1}"),
                image=image,
                caption=clean_text(caption or ""),
                user=clean_text(node.user) if node is not None and node.user else None,
                taken_at=taken_at,
                source={"format": "instaloader", "shortcode": node.shortcode if node else None, "index": n,
                        "file": c.key},
            )


def _report(root: Path, folders: dict[Path, Folder], candidates: list[_Candidate], layouts: Counter[str],
            stats: Any) -> None:
    """Log and keep (``stats.notes``) which file-name pattern the folder follows and what was left over."""
    claimed = {p for c in candidates for _, p in c.pictures}
    unpaired = sorted(p for f in folders.values() for p in map(f.path, f.images.values()) if p not in claimed)
    layout = layouts.most_common(1)[0][0] if layouts else None
    stats.notes.update({"layout": layout, "layouts": dict(layouts), "unpaired_images": len(unpaired)})
    if layout is not None:
        log.info("instaloader folder %s: %d posts; file names follow %s%s", root, len(candidates), layout,
                 f" ({dict(layouts)})" if len(layouts) > 1 else "")
    if unpaired:
        log.info("%d pictures belong to no post (profile pictures, or posts without metadata), e.g. %s",
                 len(unpaired), unpaired[0].name)
    if not candidates and unpaired:
        raise ValueError(
            f"{root} holds {len(unpaired)} pictures but no instaloader metadata (.json.xz) or caption (.txt) "
            "beside them: download again without --no-metadata-json"
        )
