"""Split assignment: deterministic by id hash, or the corpus's own."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from pathlib import Path

from train.config import SplitConfig
from train.corpus.posts import Post
from train.corpus.split import assign_splits


def _posts(n: int, split: str | None = None) -> list[Post]:
    return [Post(id=f"post{i}", image=Path(f"/x/{i}.jpg"), caption="c", split=split) for i in range(n)]


def test_hash_split_shares_and_determinism() -> None:
    posts = _posts(20_000)
    out, method = assign_splits(posts, SplitConfig())
    assert method == "hash"
    counts = Counter(p.split for p in out)
    assert abs(counts["train"] / 20_000 - 0.80) < 0.01
    assert abs(counts["val"] / 20_000 - 0.05) < 0.005
    assert abs(counts["test"] / 20_000 - 0.15) < 0.01
    again, _ = assign_splits(list(reversed(posts[:500])), SplitConfig())
    first = {p.id: p.split for p in out}
    assert all(first[p.id] == p.split for p in again)  # order and corpus size do not matter


def test_sidecar_images_share_a_split() -> None:
    posts = [
        Post(id=f"sc{k}_{n}", image=Path("/x"), caption="c", source={"shortcode": f"sc{k}"})
        for k in range(300)
        for n in (1, 2, 3)
    ]
    out, _ = assign_splits(posts, SplitConfig())
    by_post: dict[str, set[str | None]] = {}
    for p in out:
        by_post.setdefault(p.id.split("_")[0], set()).add(p.split)
    assert all(len(s) == 1 for s in by_post.values())


def test_corpus_split_kept_when_every_post_has_one() -> None:
    posts = _posts(10, "test") + _posts(5, "val")
    out, method = assign_splits(posts, SplitConfig())
    assert method == "corpus" and [p.split for p in out] == [p.split for p in posts]


def test_unlisted_posts_train_when_the_corpus_has_a_split() -> None:
    posts = _posts(10, "test")
    posts[3] = replace(posts[3], split=None)
    out, method = assign_splits(posts, SplitConfig())
    assert method == "corpus+train" and out[3].split == "train" and out[4].split == "test"


def test_corpus_split_ignored_when_disabled() -> None:
    out, method = assign_splits(_posts(400, "test"), SplitConfig(use_corpus_split=False))
    assert method == "hash" and Counter(p.split for p in out)["train"] > 250
