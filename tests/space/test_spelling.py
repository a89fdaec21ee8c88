"""Query words the space does not know: accents folded, misspellings matched to the nearest spelling."""

from __future__ import annotations

import numpy as np
import pytest

from space.errors import EmptyQuery, UnknownWords
from space.query import parse_query
from space.spelling import Speller, edit_distance
from space.textspace import TextSpace

WORDS = ["gràcia", "dog", "dogs", "man", "beach", "niño", "sea", "bicycle", "sagrada", "família"]
COUNTS = np.array([5, 900, 300, 800, 400, 30, 60, 120, 8, 8])


@pytest.fixture
def space() -> TextSpace:
    rng = np.random.default_rng(0)
    return TextSpace(WORDS, rng.normal(size=(len(WORDS), 8)).astype(np.float32), np.ones(len(WORDS)), COUNTS)


@pytest.mark.parametrize(("a", "b", "d"), [("dog", "dog", 0), ("dgo", "dog", 1), ("beach", "baech", 1),
                                            ("bicycle", "bicyle", 1), ("kitten", "sitting", 3),
                                            ("", "ab", 2)])
def test_edit_distance(a: str, b: str, d: int) -> None:
    assert edit_distance(a, b) == d


def test_accents_and_case_are_folded(space: TextSpace) -> None:
    q = parse_query("Gracia nino")
    _, unknown = space.embed_query(q)
    assert unknown == []
    assert space.corrections(q) == {"gracia": "gràcia", "nino": "niño"}
    assert space.query_words(q) == {"gràcia", "niño"}


def test_misspellings_get_the_nearest_spelling(space: TextSpace) -> None:
    q = parse_query("baech bicyle")
    assert space.corrections(q) == {"baech": "beach", "bicyle": "bicycle"}
    # Ties go to the more frequent word; short words are never guessed.
    assert Speller(["cart", "card"], np.array([1, 9])).nearest("carx") == 1
    assert space.lookup("dgo") is None


def test_function_words_in_a_query_are_ignored_not_unknown(space: TextSpace) -> None:
    q = parse_query("man on a bike con sea")
    assert q.positive == ("man", "bike", "sea")  # "con" is Spanish "with"; "sea" is English "sea"
    _, unknown = space.embed_query(q)
    assert unknown == ["bike"]
    with pytest.raises(EmptyQuery):
        parse_query("the of a")
    # A content word of one language that is a function word of another is searchable.
    assert space.embed_query(parse_query("sea"))[1] == []
    with pytest.raises(UnknownWords):
        space.embed_query(parse_query("zzzzqqq"))


def test_long_words_are_never_searched(space: TextSpace, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 28: a 499-letter word built ~125,000 deletions (1.8 s); past the cap none is built at all."""
    import space.spelling as spelling

    made: list[str] = []
    real = spelling._deletes
    monkeypatch.setattr(spelling, "_deletes", lambda word: made.append(word) or real(word))
    speller = Speller(["a" * 40, *WORDS], np.ones(len(WORDS) + 1))  # a 40-letter word: the length cap decides
    speller.prepare()
    made.clear()
    for n in (31, 300, 499):
        assert speller.nearest("a" * (n - 1) + "b") is None
    assert made == []
    # Within the cap, but longer than any vocabulary word by more than two edits: nothing within reach.
    assert space.speller.nearest("bicyclexxxxx") is None and made == []
    # Words up to the cap are still corrected.
    assert Speller(["x" * 29 + "y"], np.ones(1)).nearest("x" * 29 + "z") == 0


def test_a_word_is_searched_once_per_speller(space: TextSpace, monkeypatch: pytest.MonkeyPatch) -> None:
    """A query asks for its words several times (embedding, corrections, its own words): one search each."""
    import space.spelling as spelling

    space.speller.prepare()
    made: list[str] = []
    real = spelling._deletes
    monkeypatch.setattr(spelling, "_deletes", lambda word: made.append(word) or real(word))
    q = parse_query("baech bicyle")
    space.embed_query(q)
    assert space.corrections(q) == {"baech": "beach", "bicyle": "bicycle"}
    assert space.query_words(q) == {"beach", "bicycle"}
    assert made.count("baech") == 1 and made.count("bicyle") == 1


def test_spells_says_which_queries_search(space: TextSpace) -> None:
    assert not space.spells(parse_query("dog beach gracia"))  # known, or known without accents
    assert not space.spells(parse_query("man on sea"))  # function words are not searched
    assert not space.spells(parse_query("dog " + "q" * 60))  # too long to correct
    assert space.spells(parse_query("dog baech"))
    assert space.spells(parse_query("dog -bicyle"))


def test_a_speller_is_freed_by_reference_counting() -> None:
    """No reference cycle: the engine freezes the collector's view after each load (gc.freeze), so a
    retired bundle's speller that only a collection could free would stay in memory for good."""
    import gc
    import weakref

    speller = Speller(WORDS, COUNTS)
    assert speller.nearest("baech") is not None
    ref = weakref.ref(speller)
    gc.disable()
    try:
        del speller
        assert ref() is None
    finally:
        gc.enable()
