"""Query parsing and TF-IDF embedding, including property-based checks on hostile text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from space.errors import EmptyQuery, UnknownWords
from space.query import parse_query
from space.textspace import TextSpace


def test_positive_and_negative_terms() -> None:
    q = parse_query("beer -Estrella the #barcelona")
    assert q.positive == ("beer", "barcelona") and q.negative == ("estrella",)
    assert q.normalised() == "barcelona beer -estrella"


@pytest.mark.parametrize("text", ["", "   ", "the and of", "123 456", "🙂🙂", "\x00\x01"])
def test_empty_queries(text: str) -> None:
    with pytest.raises(EmptyQuery):
        parse_query(text)


def test_too_long_query() -> None:
    with pytest.raises(EmptyQuery, match="too long"):
        parse_query("dog " * 3000)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_never_crashes(text: str) -> None:
    try:
        q = parse_query(text)
    except EmptyQuery:
        return
    assert q.positive or q.negative
    assert all(w == w.lower() and w.strip() for w in (*q.positive, *q.negative))


def _space() -> TextSpace:
    words = ["dog", "puppy", "cat", "beach"]
    vecs = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    return TextSpace(words, vecs, idf=np.array([1.0, 2.0, 1.0, 1.0]), counts=np.array([5, 5, 5, 5]))


def test_tfidf_weighted_mean() -> None:
    s = _space()
    vec, unknown = s.embed_tokens(["dog", "cat", "cat", "zebra"])
    # weights: dog 1*1, cat 2*1 -> (1,0,0)/3 + 2*(0,1,0)/3
    assert vec is not None and np.allclose(vec, [1 / 3, 2 / 3, 0]) and unknown == ["zebra"]


def test_unknown_only_query_reports_words() -> None:
    with pytest.raises(UnknownWords) as err:
        _space().embed_query(parse_query("zebra giraffe"))
    assert err.value.unknown == ["zebra", "giraffe"]


def test_subtraction_moves_query() -> None:
    s = _space()
    plus, _ = s.embed_query(parse_query("dog"))
    minus, _ = s.embed_query(parse_query("dog -puppy"))
    assert s.nearest(plus, 1, exclude={"dog"})[0][0] == "puppy"
    assert s.nearest(minus, 1, exclude={"dog"})[0][0] != "puppy"


def test_save_load_roundtrip(tmp_path: Path) -> None:
    s = _space()
    s.save(tmp_path)
    t = TextSpace.load(tmp_path)
    assert t.words == s.words and np.allclose(t.vectors, s.vectors) and np.allclose(t.idf, s.idf)
