"""The hashtag model's scoring: head probability plus neighbour votes, one word per singular/plural."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from space.hashtags import Hashtagger, map_npz, plural_forms

WORDS = ["dog", "dogs", "grass", "beach", "perro", "playa", "running"]


def tagger() -> Hashtagger:
    # Candidates: every word; the head likes dog (0) and dogs (1) on dimension 0, beach (3) on dimension 1.
    weight = np.zeros((7, 2), np.float32)
    weight[0, 0], weight[1, 0], weight[3, 1] = 4.0, 3.5, 4.0
    bias = np.full(7, -2.0, np.float32)
    # Pool rows 10 and 11 vote: row 10's captions hold grass and running, row 11's playa.
    indptr = np.array([0, 2, 3])
    indices = np.array([2, 6, 5])
    in_language = np.array([[1, 1, 1, 1, 0, 0, 1], [0, 0, 0, 0, 1, 1, 0]], bool)
    return Hashtagger(np.arange(7), weight, bias, np.array([10, 11]), indptr, indices, ("en", "es"),
                      in_language)


def test_head_and_neighbours_add_up() -> None:
    t = tagger()
    scores = t.scores(np.array([1.0, 0.0]), np.array([10, 99]), np.array([0.9, 0.8]))
    # Row 99 is not a voting post; row 10's words get its whole vote.
    assert scores[2] > 0.45 and scores[6] > 0.45 and scores[5] < 0.1 and (scores <= 1).all()
    assert scores[0] > scores[3]


def test_one_word_per_singular_and_plural() -> None:
    t = tagger()
    scores = t.scores(np.array([1.0, 0.0]), np.array([], int), np.array([], np.float32))
    best = [w for w, _ in t.best(scores, WORDS, 3)]
    assert best[0] == "dog" and "dogs" not in best
    assert plural_forms("dogs") >= {"dog", "dogs"}


def test_language_filter() -> None:
    t = tagger()
    scores = t.scores(np.array([0.0, 1.0]), np.array([11]), np.array([0.7]))
    assert [w for w, _ in t.best(scores, WORDS, 2, language="es")] == ["playa", "perro"]
    assert t.best(scores, WORDS, 1, language="en")[0][0] == "beach"
    assert t.best(scores, WORDS, 1, language="fr")[0][0] in WORDS  # unknown language: no filter


def test_save_and_load(tmp_path: Path) -> None:
    t = tagger()
    t.save(tmp_path)
    back = Hashtagger.load(tmp_path)
    assert back is not None and back.languages == ("en", "es")
    v = np.array([0.3, 0.7])
    near, sims = np.array([10]), np.array([0.5])
    assert np.allclose(back.scores(v, near, sims), t.scores(v, near, sims))
    assert Hashtagger.load(tmp_path / "nothing") is None


def test_one_language_bundle_answers_a_language_filter(tmp_path: Path) -> None:
    # A one-language corpus keeps no per-language table; asking for its language must not fail.
    t = tagger()
    one = Hashtagger(t.rows, t.weight, t.bias, t.pool, t.indptr, t.indices, ("en",), None)
    one.save(tmp_path)
    back = Hashtagger.load(tmp_path)
    assert back is not None
    scores = back.scores(np.array([1.0, 0.0]), np.array([], int), np.array([], np.float32))
    assert back.best(scores, WORDS, 1, language="en")[0][0] == "dog"


def test_voting_posts_are_mapped_from_the_file(tmp_path: Path) -> None:
    t = tagger()
    t.save(tmp_path)
    mapped = Hashtagger.load(tmp_path, mmap=True)
    assert mapped is not None
    for name in ("pool", "indptr", "indices"):
        assert isinstance(getattr(mapped, name), np.memmap)  # shared by every process, not read
        np.testing.assert_array_equal(getattr(mapped, name), getattr(t, name))
    v, near, sims = np.array([1.0, 0.0]), np.array([10, 11]), np.array([0.9, 0.4])
    assert np.allclose(mapped.scores(v, near, sims), t.scores(v, near, sims))
    np.savez_compressed(tmp_path / "z.npz", pool=t.pool)
    assert map_npz(tmp_path / "z.npz", ["pool"]) == {}  # a compressed member is read, not mapped
