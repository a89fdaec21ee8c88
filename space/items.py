"""The bundle's items as a table the engine maps instead of parsing: one record per image row.

``images.json`` holds every kept post's fields as one JSON document; parsing it costs seconds and about a
kilobyte of Python objects per post in every engine process (325,000 posts: ~1 GB a process). The item
table is the same data laid out for random access, written by :func:`space.bundle.publish` from
``images.json`` (so it can never disagree with it) and memory-mapped by readers:

- ``items/records.jsonl``: row i's item as one line of compact JSON, with its public ``id`` added;
- ``items/offsets.npy``: (N + 1,) int64 byte offsets of the lines;
- ``items/ids.npy`` + ``items/id_rows.npy``: the public ids as UTF-8 bytes, sorted, and the row of each
  (an id is found by binary search over the mapped array, no dictionary of N strings);
- ``items/langs.npy`` + ``items/languages.json``: (N,) int16 language of each row (-1: none) and the codes.

A row's record is read (and parsed) only when an answer names it; every engine process on a host shares
the mapped pages. Bundles without the table (published before it existed) are read from ``images.json``
into the same structure in memory.
"""

from __future__ import annotations

import json
import logging
import mmap
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

ITEMS_DIR = "items"
RECORDS = f"{ITEMS_DIR}/records.jsonl"
OFFSETS = f"{ITEMS_DIR}/offsets.npy"
IDS = f"{ITEMS_DIR}/ids.npy"
ID_ROWS = f"{ITEMS_DIR}/id_rows.npy"
LANGS = f"{ITEMS_DIR}/langs.npy"
LANGUAGES = f"{ITEMS_DIR}/languages.json"
TABLE_FILES = (RECORDS, OFFSETS, IDS, ID_ROWS, LANGS, LANGUAGES)


def public_ids(items: Sequence[dict[str, Any]]) -> list[str]:
    """Stable public ids (the post id), made unique with a ``~n`` suffix where a post holds several images."""
    seen: dict[str, int] = {}
    ids = []
    for i, item in enumerate(items):
        base = str(item.get("post_id") or i)
        n = seen.get(base, 0)
        seen[base] = n + 1
        ids.append(base if n == 0 else f"{base}~{n}")
    return ids


class ItemTable:
    """Random access to the items of one bundle: records by row, rows by public id, rows by language."""

    def __init__(self, records: Any, offsets: np.ndarray | None, ids: np.ndarray, id_rows: np.ndarray,
                 langs: np.ndarray, languages: Sequence[str]) -> None:
        if (offsets is not None and len(offsets) != len(langs) + 1) or len(ids) != len(langs) \
                or len(id_rows) != len(langs):
            raise ValueError("the item table's arrays disagree on the number of rows")
        # A read-only mmap of records.jsonl with its line offsets, or (a bundle without a table, read from
        # images.json) the parsed records themselves and no offsets.
        self._records = records
        self._offsets = offsets
        self._ids = ids
        self._id_rows = id_rows
        self._langs = langs
        self.languages = tuple(languages)

    def __len__(self) -> int:
        return len(self._langs)

    def record(self, row: int) -> dict[str, Any]:
        """Row ``row``'s item (the images.json fields and ``id``), parsed from its line."""
        if self._offsets is None:
            return dict(self._records[row])
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        value = json.loads(self._records[start:end])
        if not isinstance(value, dict):
            raise ValueError(f"item {row} is not a JSON object")
        return value

    def records(self) -> list[dict[str, Any]]:
        """Every record, in row order (a bundle small enough to hold them all)."""
        if self._offsets is None:
            return list(self._records)
        return [self.record(i) for i in range(len(self))]

    def row_of(self, public_id: str) -> int | None:
        """The row of the image with public id ``public_id``, or None."""
        try:
            key = public_id.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from a URL: no id holds one
            return None
        if not key or len(key) > self._ids.dtype.itemsize or key.endswith(b"\0"):
            return None
        at = int(np.searchsorted(self._ids, key))
        if at < len(self._ids) and self._ids[at] == key:
            return int(self._id_rows[at])
        return None

    def language_rows(self) -> dict[str, np.ndarray]:
        """Each language's rows (int64, ascending); rows without a language belong to none."""
        return {code: np.flatnonzero(self._langs == i).astype(np.int64)
                for i, code in enumerate(self.languages)}

    @classmethod
    def from_items(cls, items: Sequence[dict[str, Any]]) -> ItemTable:
        """The table of ``items`` (an images.json ``items`` list), in memory: the records themselves."""
        ids, id_rows, langs, languages = _index_columns(items)
        records = [{**item, "id": pid} for item, pid in zip(items, public_ids(items), strict=True)]
        return cls(records, None, ids, id_rows, langs, languages)

    @classmethod
    def open(cls, directory: Path) -> ItemTable | None:
        """The bundle's mapped table, or None for a bundle published without one."""
        directory = Path(directory)
        if not all((directory / name).is_file() for name in TABLE_FILES):
            return None
        records_path = directory / RECORDS
        if records_path.stat().st_size == 0:
            records: Any = b""
        else:
            with records_path.open("rb") as f:
                records = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            records.madvise(mmap.MADV_RANDOM)  # a hit reads one ~300-byte line, not 128 KiB around it
        languages = json.loads((directory / LANGUAGES).read_text(encoding="utf-8"))
        offsets, ids, id_rows, langs = (np.load(directory / name, mmap_mode="r")
                                        for name in (OFFSETS, IDS, ID_ROWS, LANGS))
        return cls(records, offsets, ids, id_rows, langs, [str(code) for code in languages])


def _index_columns(items: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """The sorted public ids (UTF-8 bytes), their rows, each row's language number and the languages."""
    ids = public_ids(items)
    encoded = np.array([pid.encode("utf-8") for pid in ids], dtype=bytes) if ids else np.zeros(0, "S1")
    order = np.argsort(encoded, kind="stable").astype(np.int64)
    languages = sorted({str(item["lang"]) for item in items if item.get("lang")})
    code_of = {code: i for i, code in enumerate(languages)}
    langs = np.array([code_of.get(str(item.get("lang") or ""), -1) for item in items], dtype=np.int16)
    return encoded[order], order, langs, languages


def _columns(items: Sequence[dict[str, Any]]) -> tuple[bytes, np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                                       list[str]]:
    ids, id_rows, langs, languages = _index_columns(items)
    lines = [json.dumps({**item, "id": pid}, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
             for item, pid in zip(items, public_ids(items), strict=True)]
    offsets = np.zeros(len(lines) + 1, dtype=np.int64)
    np.cumsum([len(line) + 1 for line in lines], out=offsets[1:])
    blob = b"".join(line + b"\n" for line in lines)
    return blob, offsets, ids, id_rows, langs, languages


def write_table(directory: Path, items: Sequence[dict[str, Any]]) -> list[str]:
    """Write the item table of ``items`` into ``directory/items/``; return the files' relative names."""
    blob, offsets, ids, id_rows, langs, languages = _columns(items)
    (directory / ITEMS_DIR).mkdir(exist_ok=True)
    (directory / RECORDS).write_bytes(blob)
    np.save(directory / OFFSETS, offsets)
    np.save(directory / IDS, ids)
    np.save(directory / ID_ROWS, id_rows)
    np.save(directory / LANGS, langs)
    (directory / LANGUAGES).write_text(json.dumps(languages, ensure_ascii=False), encoding="utf-8")
    return list(TABLE_FILES)


def write_table_from_meta(directory: Path, meta_name: str) -> list[str]:
    """Write the item table from the bundle's ``images.json``; nothing when that is not an item list."""
    try:
        meta = json.loads((directory / meta_name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("no item table: %s is not readable JSON (%s)", meta_name, exc)
        return []
    items = meta.get("items") if isinstance(meta, dict) else None
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        log.warning("no item table: %s holds no list of items", meta_name)
        return []
    return write_table(directory, items)


class Records(Sequence[dict[str, Any]]):
    """The table's records as a read-only sequence (``model.items``): parsed on access, never all at once."""

    def __init__(self, table: ItemTable) -> None:
        self.table = table

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, row: Any) -> Any:
        if isinstance(row, slice):
            return [self.table.record(i) for i in range(*row.indices(len(self)))]
        row = int(row)
        if row < 0:
            row += len(self)
        if not 0 <= row < len(self):
            raise IndexError(row)
        return self.table.record(row)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self.table.record(i) for i in range(len(self)))
