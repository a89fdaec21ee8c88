"""Stop words are function words only: every content word of the corpus stays searchable."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from space.tokenize import LANGUAGES, language_stop_words, stop_words, tokenize

# The closed classes, written out here independently of space/stopwords: articles and determiners,
# prepositions, pronouns, auxiliaries, conjunctions, negation and English contraction stems.
_CLOSED = (
    "a an the this that these those each every either neither some any no another other such all both "
    "about above across after against along alongside amid among amongst around as at atop before behind "
    "below beneath beside besides between beyond by despite down during except for from in into near of "
    "off on onto out over past per since than through throughout till to toward towards under underneath "
    "until unto up upon via with within without i me my mine myself you your yours yourself yourselves he "
    "him his himself she her hers herself it its itself we us our ours ourselves they them their theirs "
    "themselves who whom whose which what whatever whoever someone somebody something anyone anybody "
    "anything everyone everybody everything nobody nothing be am is are was were been being have has had "
    "having do does did doing will would shall should can could may might must ought and or but nor so yet "
    "if because although though while whereas whether unless when where why how then not there isn aren "
    "wasn weren hasn haven hadn don doesn didn won wouldn shan shouldn couldn mustn cannot ll ve re"
)
ENGLISH_CLOSED_CLASS = set(_CLOSED.split())

# Words a general-purpose stop list drops although people search for them.
CONTENT_WORDS = {
    "en": ["man", "men", "young", "little", "small", "large", "group", "outside", "looking", "four", "two",
           "one", "people", "red", "white", "sea", "son", "van", "cap", "hay", "soy", "sense"],
    "es": ["gran", "niño", "perro", "playa", "hombre", "dos", "calle", "agua"],
    "ca": ["home", "gran", "gos", "platja", "nen", "dos", "carrer", "aigua"],
}


@pytest.mark.parametrize("language", LANGUAGES)
def test_content_words_are_never_stop_words(language: str) -> None:
    for w in CONTENT_WORDS[language]:
        assert w not in language_stop_words(language), w
        assert w in tokenize(f"una foto amb {w}", language=language) or w in tokenize(w, language=language)


def test_english_content_words_survive_when_the_language_is_unknown() -> None:
    for w in CONTENT_WORDS["en"]:
        assert w not in stop_words(None), w


def test_frequent_flickr8k_stop_words_are_all_function_words(flickr8k_dir: Path) -> None:
    """No word in >= 0.5 % of the corpus' captions is dropped unless it is a closed-class word."""
    lines = (flickr8k_dir / "Flickr8k.token.txt").read_text(encoding="utf-8").splitlines()
    captions = [line.split("\t", 1)[1] for line in lines if "\t" in line]
    df: Counter[str] = Counter()
    for c in captions:
        df.update(set(re.findall(r"[a-z]+", c.lower())))
    frequent = {w for w, n in df.items() if n >= 0.005 * len(captions)}
    dropped = frequent & language_stop_words("en")
    assert dropped, "the English list drops no frequent word at all: it is not being read"
    assert dropped <= ENGLISH_CLOSED_CLASS, sorted(dropped - ENGLISH_CLOSED_CLASS)
    kept = frequent - language_stop_words("en")
    assert {"man", "young", "group", "outside", "little", "two"} <= kept


def test_lists_apply_per_language() -> None:
    # Spanish "son" (they are) is a function word; English "son" is a noun.
    assert "son" not in tokenize("Los niños son felices", language="es")
    assert "son" in tokenize("A father and his son", language="en")
    # Catalan "home" (man) stays in Catalan text.
    assert tokenize("Un home amb un gos a la platja", language="ca") == ["home", "gos", "platja"]


def test_lists_are_short() -> None:
    for code in LANGUAGES:
        assert 50 <= len(language_stop_words(code)) <= 300
