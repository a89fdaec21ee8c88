"""Faulty corpora through ``python -m train all --quick``: a clear message, and the old bundle untouched.

``tests/train/test_pipeline.py`` already covers an empty ``posts.jsonl`` and an all-filtered corpus via
``build_bundle``; here the CLI meets corpora whose every line is broken, every image missing or
unreadable, or every caption too short, while a bundle is already active: each exits 1 with a message
naming what was skipped, writes a ``failed`` progress line, and leaves the bundles and ACTIVE as they
were. One mixed-fault corpus of 24 real photos does make a bundle, and its published ``filter_report``
counts every skipped record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from space import bundle
from train.__main__ import main

N_GOOD = 24


def _captions(flickr8k: Path, n: int) -> list[tuple[Path, str]]:
    """The first ``n`` Flickr8k photos with all five captions joined (unambiguously English)."""
    caps: dict[str, list[str]] = {}
    for line in (flickr8k / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, text = line.split("\t", 1)
        caps.setdefault(name.split("#")[0], []).append(text.strip())
    names = sorted(caps)[:n]
    return [(flickr8k / "images" / name, " ".join(caps[name])) for name in names]


def _write_jsonl(root: Path, lines: list[str]) -> Path:
    root.mkdir(parents=True)
    (root / "posts.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def _post(i: int, image: Path, caption: str) -> str:
    return json.dumps({"id": f"p{i}", "image": str(image), "caption": caption, "user": f"u{i}"})


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """A models dir whose ACTIVE bundle stands in for the one serving now (never verified here)."""
    models = tmp_path / "models"
    with bundle.staging(models) as staged:
        for name in bundle.REQUIRED_FILES:
            (staged / name).write_bytes(b"old bundle")
        bundle.publish(staged, models, {"version": "20200101-000000-old"})
    return models


def _broken_json(root: Path, flickr8k: Path) -> tuple[Path, str]:
    lines = ['{"id": "x", "image": ', "not json at all", "{'single': 'quotes'}", "[1, 2", '{"id": "y"']
    return _write_jsonl(root, lines), "bad_json': 5"


def _missing_images(root: Path, flickr8k: Path) -> tuple[Path, str]:
    lines = [_post(i, root / "gone" / f"{i}.jpg", cap) for i, (_, cap) in enumerate(_captions(flickr8k, 4))]
    return _write_jsonl(root, lines), "missing_image': 4"


def _unreadable_images(root: Path, flickr8k: Path) -> tuple[Path, str]:
    root.mkdir(parents=True)
    lines = []
    for i, (photo, cap) in enumerate(_captions(flickr8k, 5)):
        bad = root / f"{i}.jpg"
        # a text file, an empty file and truncated JPEGs, all named .jpg
        bad.write_bytes(b"" if i == 0 else b"text\n" * 9 if i == 1 else photo.read_bytes()[: 200 * i])
        lines.append(_post(i, bad, cap))
    return _write_jsonl(root / "c", lines), "'unreadable': 5"


def _all_too_short(root: Path, flickr8k: Path) -> tuple[Path, str]:
    caps = ["Nice", "", "#barcelona #sun", "A dog", "   "]
    lines = [_post(i, photo, caps[i]) for i, (photo, _) in enumerate(_captions(flickr8k, 5))]
    return _write_jsonl(root, lines), "dropped all 5 posts"


def _empty_instaloader(root: Path, flickr8k: Path) -> tuple[Path, str]:
    root.mkdir(parents=True)
    (root / "notes.txt").write_text("no posts here\n", encoding="utf-8")
    return root, "holds no post"


Maker = Callable[[Path, Path], tuple[Path, str]]
FAILING: dict[str, tuple[Maker, str]] = {
    "every line broken JSON": (_broken_json, "jsonl"),
    "every image missing": (_missing_images, "jsonl"),
    "every image unreadable": (_unreadable_images, "jsonl"),
    "every caption too short": (_all_too_short, "jsonl"),
    "empty instaloader folder": (_empty_instaloader, "instaloader"),
}


@pytest.mark.parametrize("case", list(FAILING))
def test_failing_corpus_exits_1_and_keeps_the_active_bundle(
    case: str, models: Path, tmp_path: Path, flickr8k_dir: Path, weights_dir: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    maker, fmt = FAILING[case]
    corpus, expected = maker(tmp_path / "corpus", flickr8k_dir)
    before = (bundle.list_versions(models), (models / bundle.ACTIVE).read_bytes())
    progress = tmp_path / "progress.jsonl"
    rc = main(["all", "--corpus", str(corpus), "--format", fmt, "--models", str(models), "--quick",
               "--weights", str(weights_dir), "--progress-file", str(progress)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "error:" in err and expected in err, err
    last = json.loads(progress.read_text().splitlines()[-1])
    assert last["stage"] == "failed" and expected in last["error"]
    assert (bundle.list_versions(models), (models / bundle.ACTIVE).read_bytes()) == before
    assert not list(models.glob(bundle.TMP_PREFIX + "*"))


def test_mixed_faults_make_a_bundle_that_counts_them(
    models: Path, tmp_path: Path, flickr8k_dir: Path, weights_dir: Path
) -> None:
    root = tmp_path / "corpus"
    root.mkdir()
    good = _captions(flickr8k_dir, N_GOOD + 2)
    lines = [_post(i, photo, cap) for i, (photo, cap) in enumerate(good[:N_GOOD])]
    lines += ['{"id": "broken', "garbage line", _post(90, root / "missing.jpg", good[0][1]),
              _post(91, root / "missing2.jpg", good[1][1]), json.dumps(["not", "a", "post"])]
    for i, (photo, cap) in enumerate(good[N_GOOD:]):
        (root / f"bad{i}.jpg").write_bytes(photo.read_bytes()[:300])  # truncated: unreadable
        lines.append(_post(100 + i, root / f"bad{i}.jpg", cap))
    # A 100000×2 PNG: tiny on disk, ~3 GB once its short side is scaled to 256 (refused as unreadable).
    Image.new("RGB", (100_000, 2), (90, 90, 90)).save(root / "line.png")
    lines.append(_post(200, root / "line.png", good[2][1]))
    _write_jsonl(root / "c", lines)
    rc = main(["all", "--corpus", str(root / "c"), "--format", "jsonl", "--models", str(models), "--quick",
               "--weights", str(weights_dir), "--recipe", "seed", "--image-set", "epochs=1",
               "--image-set", "train_views=1", "--no-activate"])
    assert rc == 0
    new = [v for v in bundle.list_versions(models) if v != "20200101-000000-old"]
    assert len(new) == 1 and bundle.active_version(models) == "20200101-000000-old"
    report: dict[str, Any] = bundle.read_manifest(models / new[0])["filter_report"]
    assert report["ingest"]["bad"] == {"bad_json": 2, "missing_image": 2, "bad_record": 1}
    assert report["dropped"]["unreadable"] == 3
    assert report["kept"] + sum(report["dropped"].values()) == N_GOOD + 3
