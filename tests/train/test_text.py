"""The text space on all of Flickr8k's captions at the original settings, and its TF-IDF contract."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from space.textspace import TextSpace
from train.config import IngestConfig, TextConfig
from train.corpus.ingest import ingest
from train.corpus.posts import Post
from train.text.word2vec import TextResult, build_text_space, post_tokens, related, sentences_of


@pytest.fixture(scope="session")
def flickr_posts(flickr8k_dir: Path) -> list[Post]:
    posts, stats = ingest(IngestConfig(flickr8k_dir, "flickr8k"))
    assert len(posts) == 8091 and not stats.bad
    return posts


@pytest.fixture(scope="session")
def flickr_text(flickr_posts: list[Post]) -> TextResult:
    """Word2Vec 300-d, window 8, 50 epochs, min_count 5 over all 40,455 captions (once per session).

    How long it takes is a benchmark (docs/benchmarks.md, Text stage: scripts/bench_text.py), not a test.
    """
    return build_text_space(flickr_posts, TextConfig())


def test_trains_on_every_caption_at_original_settings(flickr_text: TextResult) -> None:
    result = flickr_text
    assert result.space.dim == 300
    # Five captions per image, each its own sentence (a handful are all stop words).
    assert 40_400 <= result.stats["n_sentences"] <= 40_455
    assert result.stats["vocab"] > 2000
    assert min(int(c) for c in result.space.counts) >= 5


def test_dog_and_beach_neighbours(flickr_text: TextResult) -> None:
    space = flickr_text.space
    dog = {w for w, _ in related(space, "dog", 10)[0]}
    beach = {w for w, _ in related(space, "beach", 10)[0]}
    assert dog & {"dogs", "puppy"}, dog
    assert beach & {"ocean", "sand", "water"}, beach


def test_unknown_only_query_lists_unknown(flickr_text: TextResult) -> None:
    words, unknown = related(flickr_text.space, "xyzzyq blorptown", 5)
    assert words == [] and unknown == ["xyzzyq", "blorptown"]


def test_combined_and_subtracted_terms(flickr_text: TextResult) -> None:
    space = flickr_text.space
    words, unknown = related(space, "snow dog -water", 10)
    assert unknown == []
    names = [w for w, _ in words]
    assert "snow" not in names and "dog" not in names and "water" not in names
    mixed, unknown = related(space, "beach qwertyzz", 5)
    assert unknown == ["qwertyzz"] and mixed


def test_idf_is_gensim_log2_over_post_documents(
    flickr_text: TextResult, flickr_posts: list[Post]
) -> None:
    space = flickr_text.space
    docs = [set(post_tokens(p)) for p in flickr_posts]
    df = Counter(w for d in docs for w in d)
    for word in ("dog", "beach", "skateboard", "mountain"):
        i = space.index[word]
        assert space.idf[i] == pytest.approx(math.log2(len(docs) / df[word]), rel=1e-5)


def test_caption_vectors_are_the_tfidf_mean(flickr_text: TextResult) -> None:
    result = flickr_text
    assert result.vectors.shape == (len(result.posts), 300)
    for k in (0, 17, 4000):
        expected, _ = result.space.embed_tokens(post_tokens(result.posts[k]))
        assert expected is not None
        np.testing.assert_allclose(result.vectors[k], expected, rtol=1e-5, atol=1e-6)


def test_posts_without_known_words_are_dropped_and_counted(tmp_path: Path) -> None:
    captions = ["a brown dog runs on the grass"] * 6 + ["zebra giraffe savanna"]
    posts = [Post(id=str(i), image=tmp_path / f"{i}.jpg", caption=c) for i, c in enumerate(captions)]
    result = build_text_space(posts, TextConfig(vector_size=16, epochs=5, min_count=5, workers=1))
    assert result.dropped_ids == ["6"] and result.stats["no_known_words"] == 1
    assert len(result.posts) == 6 and set(result.space.words) == {"brown", "dog", "runs", "grass"}


def test_sentences_from_each_reference_caption(tmp_path: Path) -> None:
    post = Post(
        id="x", image=tmp_path / "x.jpg", caption="dog beach. cat sofa", captions=("dog beach", "cat sofa")
    )
    assert sentences_of([post], TextConfig()) == [["dog", "beach"], ["cat", "sofa"]]
    assert sentences_of([post], TextConfig(sentences_from_captions=False)) == [
        ["dog", "beach", "cat", "sofa"]
    ]


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    captions = ["red car on the road", "blue car near the road", "red bike on the road"] * 4
    posts = [Post(id=str(i), image=tmp_path / f"{i}.jpg", caption=c) for i, c in enumerate(captions)]
    result = build_text_space(posts, TextConfig.quick())
    result.save(tmp_path / "text")
    again = TextResult.load(tmp_path / "text", posts)
    assert [p.id for p in again.posts] == [p.id for p in result.posts]
    np.testing.assert_array_equal(again.vectors, result.vectors)
    assert isinstance(again.space, TextSpace) and again.space.words == result.space.words


def test_the_same_corpus_gives_the_same_vectors_in_every_process(flickr8k_dir: Path) -> None:
    """Training again gives the same word vectors, bit for bit: one Word2Vec thread, and word seeds that
    do not depend on Python's per-process string hashing."""
    import hashlib
    import os
    import subprocess
    import sys

    from tests.conftest import ROOT

    script = (
        "import hashlib, sys; from pathlib import Path\n"
        "from train.config import IngestConfig, TextConfig\n"
        "from train.corpus.ingest import ingest\n"
        "from train.text.word2vec import build_text_space\n"
        "posts, _ = ingest(IngestConfig(Path(sys.argv[1]), 'flickr8k', limit=400))\n"
        "space = build_text_space(posts, TextConfig.quick()).space\n"
        "print(hashlib.sha256(space.vectors.tobytes()).hexdigest(), len(space.words))\n"
    )
    digests = []
    for salt in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": salt}
        out = subprocess.run([sys.executable, "-c", script, str(flickr8k_dir)], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        digests.append(out.stdout.split()[-2:])
    assert digests[0] == digests[1]
    assert int(digests[0][1]) > 300  # a real vocabulary, not an empty space
    assert digests[0][0] != hashlib.sha256(b"").hexdigest()
