"""t-SNE photo mosaics and the full report on 300 real Flickr8k photos and their caption vectors."""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from sklearn.manifold import trustworthiness

from space.textspace import TextSpace, unit
from space.tokenize import tokenize
from train.corpus.posts import Post
from train.report import ReportConfig, write_image_maps, write_report
from train.report.mosaic import snap_to_grid, square_thumbnails

SIZES = (1024, 2048, 4096)


N_IMAGES = 300


def _stable_hash(text: str) -> int:
    """gensim seeds word vectors with ``hash()``, which Python randomises per process: use a stable one."""
    return zlib.crc32(text.encode("utf-8"))


@pytest.fixture(scope="module")
def flickr_corpus(flickr8k_dir: Path) -> tuple[list[Post], TextSpace, np.ndarray]:
    """Real Flickr8k photos with TF-IDF-weighted Word2Vec caption vectors as their image vectors.

    Built here (a second of CPU) rather than read from a bundle, so the neighbourhood test measures the
    layout, not whichever encoder made a bundle. Unit-normalised: the space is compared by cosine.
    """
    from gensim.models import Word2Vec

    captions: dict[str, list[str]] = defaultdict(list)
    for line in (flickr8k_dir / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines():
        name, _, text = line.partition("\t")
        captions[name.split("#")[0]].append(text.strip())
    names = (flickr8k_dir / "Flickr_8k.trainImages.txt").read_text().split()[:N_IMAGES]
    sentences = [tokenize(c) for n in names for c in captions[n]]
    w2v = Word2Vec(sentences, vector_size=64, window=8, min_count=3, epochs=30, workers=1, seed=1,
                   hashfxn=_stable_hash)
    words = list(w2v.wv.index_to_key)
    docs = [tokenize(" ".join(captions[n])) for n in names]
    df = Counter(w for d in docs for w in set(d))
    idf = np.array([math.log2(len(docs) / df[w]) for w in words], dtype=np.float32)
    counts = np.array([w2v.wv.get_vecattr(w, "count") for w in words])
    space = TextSpace(words, w2v.wv.vectors.copy(), idf, counts)
    posts, vectors = [], []
    for name, doc in zip(names, docs, strict=True):
        vec, _ = space.embed_tokens(doc)
        assert vec is not None
        posts.append(Post(id=name, image=flickr8k_dir / "images" / name, caption=captions[name][0],
                          captions=tuple(captions[name]), lang="en"))
        vectors.append(vec)
    return posts, space, unit(np.stack(vectors))


@pytest.fixture(scope="module")
def full_report(tmp_path_factory: pytest.TempPathFactory,
                flickr_corpus: tuple[list[Post], TextSpace, np.ndarray]) -> tuple[Path, dict, list]:
    posts, space, vectors = flickr_corpus
    out = tmp_path_factory.mktemp("report_full")
    calls: list[tuple[str, int, int | None, str]] = []
    cfg = ReportConfig(show_progress=False, mosaic_sizes=SIZES)
    filter_report = {"total": len(posts), "kept": len(posts), "dropped": {}, "languages": {"en": len(posts)}}
    stats = write_report(out, posts, space, vectors, filter_report, cfg,
                         progress=lambda *a: calls.append(a))
    return out, stats, calls


def _layout(out: Path) -> dict[str, Any]:
    return json.loads((out / "tsne_layout.json").read_text(encoding="utf-8"))


def test_mosaics_are_exact_squares(full_report: tuple[Path, dict, list]) -> None:
    out, stats, _ = full_report
    for size in SIZES:
        assert stats["files"][f"tsne_mosaic_{size}"] == f"tsne_mosaic_{size}.png"
        with Image.open(out / f"tsne_mosaic_{size}.png") as img:
            assert img.size == (size, size) and img.mode == "RGB"


def test_layout_uses_each_photo_once_on_distinct_cells(
    full_report: tuple[Path, dict, list], flickr_corpus: tuple[list[Post], TextSpace, np.ndarray]
) -> None:
    out, _, _ = full_report
    posts = flickr_corpus[0]
    layout = _layout(out)
    items = layout["items"]
    assert len(items) == len(posts) == layout["laid_out"]
    assert len({it["index"] for it in items}) == len(items)
    assert len({(it["col"], it["row"]) for it in items}) == len(items)
    grid = layout["grid"]
    assert grid * grid >= len(items) > (grid - 1) ** 2
    assert all(0 <= it["col"] < grid and 0 <= it["row"] < grid for it in items)
    assert layout["assignment"] == "linear_sum_assignment"
    assert {it["path"] for it in items} == {str(p.image) for p in posts}


def test_tiles_in_the_1024_mosaic_are_the_right_photos(full_report: tuple[Path, dict, list]) -> None:
    out, _, _ = full_report
    layout = _layout(out)
    geometry = layout["mosaics"]["1024"]
    tile, margin = geometry["tile"], geometry["margin"]
    all_tiles = sorted({g["tile"] for g in layout["mosaics"].values()})
    mosaic = np.asarray(Image.open(out / "tsne_mosaic_1024.png").convert("RGB"), dtype=np.int16)
    items = layout["items"]
    picks = [items[i] for i in np.random.default_rng(3).choice(len(items), size=5, replace=False)]
    for item, other in zip(picks, picks[1:] + picks[:1], strict=True):
        x0, y0 = margin + item["col"] * tile, margin + item["row"] * tile
        block = mosaic[y0 : y0 + tile, x0 : x0 + tile]
        own = np.asarray(square_thumbnails(item["path"], all_tiles)[tile], dtype=np.int16)
        foreign = np.asarray(square_thumbnails(other["path"], all_tiles)[tile], dtype=np.int16)
        assert np.abs(block - own).max() == 0
        assert np.abs(block - foreign).mean() > 10


def test_layout_preserves_neighbourhoods(
    full_report: tuple[Path, dict, list], flickr_corpus: tuple[list[Post], TextSpace, np.ndarray]
) -> None:
    out, stats, _ = full_report
    vectors = flickr_corpus[2]
    items = _layout(out)["items"]
    x = vectors[[it["index"] for it in items]].astype(np.float64)
    y = np.array([[it["x"], it["y"]] for it in items])
    cells = np.array([[it["col"], it["row"]] for it in items], dtype=float)
    t_points = trustworthiness(x, y, n_neighbors=10)
    t_cells = trustworthiness(x, cells, n_neighbors=10)
    assert t_points >= 0.9, t_points
    assert t_cells >= 0.85, t_cells  # snapping to the grid costs a little, not the structure
    assert stats["image_maps"]["trustworthiness"]["value"] == pytest.approx(t_points, abs=1e-3)
    # A random layout is far below: the threshold can fail.
    shuffled = np.random.default_rng(0).permutation(y)
    assert trustworthiness(x, shuffled, n_neighbors=10) < 0.7


def test_report_index_word_map_and_progress(full_report: tuple[Path, dict, list]) -> None:
    out, stats, calls = full_report
    for name in stats["files"].values():
        assert (out / name).is_file(), name
    assert stats["corpus"]["images"] == stats["corpus"]["posts"]
    assert stats["word_map"]["words"] == 300 and stats["word_map"]["trustworthiness"] >= 0.85
    words = json.loads((out / "word_map.json").read_text(encoding="utf-8"))["words"]
    assert words[0]["count"] >= words[-1]["count"] and words[0]["word"] == "dog"
    stages = {c[0] for c in calls}
    assert {"text", "word_map", "tsne", "mosaic"} <= stages
    tsne = [c for c in calls if c[0] == "tsne"]
    assert [c[1] for c in tsne] == sorted(c[1] for c in tsne) and len(tsne) >= 10
    assert tsne[-1][1] == tsne[-1][2] == 750
    last_mosaic = [c for c in calls if c[0] == "mosaic"][-1]
    assert last_mosaic[1] == last_mosaic[2] == stats["corpus"]["images"]


def test_large_corpus_is_sampled_to_the_grid(
    tmp_path: Path, flickr_corpus: tuple[list[Post], TextSpace, np.ndarray]
) -> None:
    posts, _, vectors = flickr_corpus
    paths: list[str | Path] = [p.image for p in posts]
    broken = set(range(0, len(paths), 10))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    for i in broken:
        paths[i] = tmp_path / "broken.jpg"
    cfg = ReportConfig(show_progress=False, mosaic_sizes=(256, 300), mosaic_max_grid=8, seed=0)
    summary = write_image_maps(tmp_path, paths, vectors, cfg)
    layout = _layout(tmp_path)
    assert summary["laid_out"] == 64 and summary["images"] == len(posts) and layout["grid"] == 8
    assert "random sample" in summary["sampling"] and "64 of" in summary["sampling"]
    assert len({(it["col"], it["row"]) for it in layout["items"]}) == 64
    assert len({it["index"] for it in layout["items"]}) == 64
    assert summary["mosaics"]["300"] == {"file": "tsne_mosaic_300.png", "tile": 37, "margin": 2}
    with Image.open(tmp_path / "tsne_mosaic_300.png") as img:
        assert img.size == (300, 300)
    laid = {it["index"] for it in layout["items"]}
    assert summary["unreadable"] == sorted(laid & broken) and summary["unreadable"]


def test_strip_assignment_for_big_grids(full_report: tuple[Path, dict, list]) -> None:
    out, _, _ = full_report
    layout = _layout(out)
    points = np.array([[it["x"], it["y"]] for it in layout["items"]])
    exact = np.array([[it["col"], it["row"]] for it in layout["items"]], dtype=float)
    grid = layout["grid"]
    for strip, method in ((grid, "strips_of_1_columns"), (4 * grid, "strips_of_4_columns")):
        cells, used = snap_to_grid(points, grid, max_exact=0, strip_points=strip)
        assert used == method
        assert len({tuple(c) for c in cells}) == len(points)
        assert cells.min() >= 0 and cells.max() < grid
        trust = trustworthiness(points, cells.astype(float), n_neighbors=10)
        assert trust >= 0.9, (method, trust)
    assert trustworthiness(points, exact, n_neighbors=10) >= 0.95


@pytest.mark.parametrize("n", [0, 1, 3])
def test_tiny_corpora_still_give_a_report(tmp_path: Path, flickr8k_dir: Path, n: int) -> None:
    images = sorted((flickr8k_dir / "images").glob("*.jpg"))[:n]
    posts = [Post(id=str(i), image=p, caption="a dog runs", lang="en") for i, p in enumerate(images)]
    space = TextSpace(["dog", "runs"], np.eye(2, dtype=np.float32), np.ones(2), np.array([3, 1]))
    vectors = np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32)
    cfg = ReportConfig(show_progress=False, mosaic_sizes=(64,))
    stats = write_report(tmp_path, posts, space, vectors, {}, cfg)
    assert stats["corpus"]["posts"] == n
    assert all((tmp_path / f).is_file() for f in stats["files"].values())
    if n == 0:
        assert stats["image_maps"]["skipped"] == "no images" and stats["languages"] == {}
    else:
        assert stats["image_maps"]["laid_out"] == n
        with Image.open(tmp_path / "tsne_mosaic_64.png") as img:
            assert img.size == (64, 64)
