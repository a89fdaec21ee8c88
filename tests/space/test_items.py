"""The item table: images.json laid out for random access (records by row, rows by id and language)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from space import bundle
from space.items import ItemTable, Records, public_ids, write_table

ITEMS = [
    {"key": 0, "post_id": "a1", "caption": "un perro en la playa", "lang": "es", "path": "/x/0.jpg"},
    {"key": 1, "post_id": "b2", "caption": "a dog ☃", "lang": "en", "path": "/x/1.jpg"},
    {"key": 2, "post_id": "a1", "caption": "second picture of a1", "lang": "es", "path": "/x/2.jpg"},
    {"key": 3, "post_id": "ñandú", "caption": "un gos", "lang": "ca", "path": "/x/3.jpg"},
    {"key": 4, "post_id": None, "caption": "no id, no language", "lang": None, "path": "/x/4.jpg"},
]


def test_public_ids_are_unique_and_stable() -> None:
    assert public_ids(ITEMS) == ["a1", "b2", "a1~1", "ñandú", "4"]


def test_written_table_reads_back_like_the_items(tmp_path: Path) -> None:
    names = write_table(tmp_path, ITEMS)
    assert all((tmp_path / name).is_file() for name in names)
    mapped = ItemTable.open(tmp_path)
    memory = ItemTable.from_items(ITEMS)
    assert mapped is not None and len(mapped) == len(memory) == len(ITEMS)
    for table in (mapped, memory):
        for row, (item, pid) in enumerate(zip(ITEMS, public_ids(ITEMS), strict=True)):
            assert table.record(row) == {**item, "id": pid}
            assert table.row_of(pid) == row
        for missing in ("", "a", "a1~2", "zzzzzzzzzzzzzzzzzzzzzzzz", "a1\0", "\ud800"):
            assert table.row_of(missing) is None, missing
        rows = table.language_rows()
        assert {k: v.tolist() for k, v in rows.items()} == {"ca": [3], "en": [1], "es": [0, 2]}
    records = Records(mapped)
    assert records[-1]["caption"] == "no id, no language"
    assert records[1:3] == [mapped.record(1), mapped.record(2)]
    assert [r["key"] for r in records] == [0, 1, 2, 3, 4]


def test_publish_writes_the_table_from_images_json(tmp_path: Path) -> None:
    with bundle.staging(tmp_path) as tmp:
        for name in bundle.REQUIRED_FILES:
            (tmp / name).write_bytes(b"x")
        (tmp / bundle.IMAGE_META).write_text(json.dumps({"items": ITEMS}), encoding="utf-8")
        np.save(tmp / bundle.IMAGE_VECTORS, np.zeros((len(ITEMS), 2), np.float32))
        path = bundle.publish(tmp, tmp_path, {})
    manifest = bundle.verify(path)
    assert "items/records.jsonl" in manifest["files"]  # hashed like every bundle file
    table = ItemTable.open(path)
    assert table is not None and table.record(3)["caption"] == "un gos" and table.row_of("ñandú") == 3
