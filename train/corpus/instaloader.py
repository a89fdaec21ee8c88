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
"""

from __future__ import annotations

import json
import logging
import lzma
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from train.corpus.posts import Post

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")  # train.corpus.ingest reads the same kinds
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
    """The files of one directory by kind, keyed by stem (the name without its suffixes)."""

    images: dict[str, Path] = field(default_factory=dict)
    captions: dict[str, Path] = field(default_factory=dict)
    metadata: dict[str, Path] = field(default_factory=dict)


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
    caption = _text(_dict(edges[0]).get("node", {}).get("text")) if edges else None
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


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The post node of a metadata file; None for other files instaloader writes (profiles, comments…).

    Raises ValueError (or an OSError/LZMAError) for a file that is not readable JSON.
    """
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        payload = json.load(f)
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


def scan(root: Path) -> dict[Path, Folder]:
    """Every folder under ``root`` with its pictures, captions and metadata files by stem."""
    folders: dict[Path, Folder] = defaultdict(Folder)
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        name = path.name
        if name.endswith(".json.xz"):
            folders[path.parent].metadata[name[: -len(".json.xz")]] = path
        elif name.endswith(".json"):
            folders[path.parent].metadata[path.stem] = path
        elif path.suffix.lower() == ".txt":
            folders[path.parent].captions[path.stem] = path
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            folders[path.parent].images.setdefault(path.stem, path)
    return folders


def _url_stem(url: str | None) -> str:
    return Path(urlparse(url or "").path).stem


def post_pictures(folder: Folder, stem: str, node: Node | None) -> list[tuple[int, Path]]:
    """The pictures of the post whose files are named ``stem``: (index, path), index 0 for a single one."""
    if node is None or not node.children:
        if stem in folder.images:
            return [(0, folder.images[stem])]
        if node is not None and node.typename in ("GraphImage", "GraphVideo"):
            return []
    suffixed = re.compile(re.escape(stem) + r"_(\d+)$")
    found = sorted((int(m.group(1)), p) for s, p in folder.images.items() if (m := suffixed.match(s)))
    if node is not None and node.children:
        found = [(k, p) for k, p in found if 1 <= k <= len(node.children)]
        if not found and node.url and _url_stem(node.url) in stem:
            # --filename-pattern with {filename}: each picture is named after its own URL.
            own = _url_stem(node.url)
            named = (folder.images.get(stem.replace(own, _url_stem(u))) if u else None for u in node.children)
            found = [(k, p) for k, p in enumerate(named, 1) if p is not None]
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


def read_folder(root: Path, stats: Any) -> Iterator[Post]:
    """Posts of an instaloader folder (``stats`` is the reader's :class:`train.corpus.ingest.IngestStats`)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")
    folders = scan(root)
    candidates: list[_Candidate] = []
    layouts: Counter[str] = Counter()
    for directory, folder in folders.items():
        for stem, meta_path in folder.metadata.items():
            try:
                raw = read_metadata(meta_path)
            except (OSError, EOFError, lzma.LZMAError, ValueError, UnicodeDecodeError) as exc:
                stats.count("bad_json", f"{meta_path} ({exc.__class__.__name__})")
                continue
            if raw is None:
                continue
            node = parse_node(raw)
            layouts[_layout(stem, node, directory.name) or "custom"] += 1
            candidates.append(_Candidate(_key(root, directory, stem), stem, folder, node,
                                         folder.captions.get(stem), post_pictures(folder, stem, node),
                                         _doubt(folder, stem, node)))
        for stem, caption_file in folder.captions.items():
            if stem in folder.metadata:
                continue
            pictures = post_pictures(folder, stem, None)
            if pictures:  # geotag files, caption backups and notes have no pictures of their own
                layouts["caption file without metadata"] += 1
                candidates.append(_Candidate(_key(root, directory, stem), stem, folder, None, caption_file,
                                             pictures))
    _report(root, folders, candidates, layouts, stats)
    yield from _posts(candidates, stats)


def _doubt(folder: Folder, stem: str, node: Node) -> str | None:
    """Why the files named ``stem`` may mix two posts: under a pattern without the shortcode, two posts of
    one second get one name; instaloader then keeps the first one's pictures (the second's "exist") but the
    second one's metadata, and renames the first caption to ``<stem>_old_NN.txt``."""
    if node.shortcode and node.shortcode in stem:
        return None  # the name is this post's own: an _old_ caption is an edit by its author
    if any(s.startswith(f"{stem}_old_") for s in folder.captions):
        return "its caption changed between downloads: two posts of one second may share the name"
    suffixed = re.compile(re.escape(stem) + r"_(\d+)$")
    extra = [s for s in folder.images if (m := suffixed.match(s)) and int(m.group(1)) > len(node.children)]
    if node.children and extra:
        return f"more pictures ({extra[0]}) than its metadata names: two posts of one second may share it"
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
                caption = c.caption_file.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                stats.count("bad_caption_file", str(c.caption_file))
        for n, image in pictures:
            yield Post(
                id=post_id if len(c.pictures) == 1 else f"{post_id}_{n or 1}",
                image=image.resolve(),
                caption=caption or "",
                user=node.user if node is not None else None,
                taken_at=_taken_at(node, c.stem),
                source={"format": "instaloader", "shortcode": node.shortcode if node else None, "index": n,
                        "file": c.key},
            )


def _report(root: Path, folders: dict[Path, Folder], candidates: list[_Candidate], layouts: Counter[str],
            stats: Any) -> None:
    """Log and keep (``stats.notes``) which file-name pattern the folder follows and what was left over."""
    claimed = {p for c in candidates for _, p in c.pictures}
    unpaired = sorted(p for f in folders.values() for p in f.images.values() if p not in claimed)
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
