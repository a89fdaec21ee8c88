"""The tokeniser: accents kept, hashtags split into words, links and mentions dropped, stop words out."""

from __future__ import annotations

import pytest

from space.tokenize import stop_words, tokenize, word_count, words


def test_accents_and_catalan_kept() -> None:
    toks = tokenize("Passejant per Gràcia, Catalunya! #CATALUNYA")
    assert "gràcia" in toks and "catalunya" in toks
    assert "grcia" not in toks


def test_glued_hashtags_become_two_words() -> None:
    assert tokenize("#barcelona#food") == ["barcelona", "food"]


def test_middle_dot_stays_inside_a_word() -> None:
    assert "col·lecció" in words("La col·lecció del museu")


def test_links_mentions_numbers_and_stop_words_dropped() -> None:
    toks = tokenize("Sunset @someone.else https://t.co/xyz www.example.com 2019 the beach y la playa")
    assert toks == ["sunset", "beach", "playa"]


@pytest.mark.parametrize(
    ("text", "n"),
    [("#barcelona #sun", 2), ("Nice view", 2), ("The dog runs .", 3), ("A dog runs", 2), ("", 0)],
)
def test_word_count(text: str, n: int) -> None:
    assert word_count(text) == n


def test_stop_words_cover_three_languages_and_custom() -> None:
    stop = stop_words()
    assert {"the", "el", "els", "instagood"} <= stop


def test_one_accent_folding_for_queries_and_the_topics_names() -> None:
    """Issue 25: space.tokenize and train.corpus.topic folded accents with two functions (NFD and NFKD)."""
    from space.tokenize import fold
    from train.corpus import topic

    assert topic.fold is fold
    assert [fold(w) for w in ("Gràcia", "Málaga", "niño", "col·lecció")] == ["gracia", "malaga", "nino",
                                                                             "col·leccio"]  # the dot stays
    assert fold("Ｓａｎｔｓ") == "sants" and fold("ﬁra") == "fira"  # full-width letters, a ligature
