"""Caption and query tokeniser: lowercase, Unicode-aware, hashtags become words, function words out.

Accents are kept ("gràcia", "cataluña"): the original system stripped non-ASCII letters and printed
"grcia". Catalan's middle dot ("col·lecció") stays inside a word. :func:`fold` gives the accent- and
case-free key that lets a query for "gracia" find "gràcia".

Stop words are function words only (articles, prepositions, pronouns, auxiliaries, conjunctions), one
short list per language in ``space/stopwords/<lang>.txt``, applied per language when a caption's
language is known. Content words — "man", "young", "group", "outside", "four", Catalan "home" (man),
Spanish "gran" — are never stop words: a general-purpose stop list drops them, and then nobody can
search for them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

# Platform filler that names no subject: dropped in every language.
CUSTOM_STOP_WORDS = frozenset(
    [
        "instagood",
        "instagram",
        "insta",
        "ig",
        "igers",
        "like4like",
        "likeforlike",
        "l4l",
        "follow4follow",
        "followme",
        "f4f",
        "photooftheday",
        "picoftheday",
        "instadaily",
        "tbt",
        "repost",
        "regram",
        "nofilter",
        "instalike",
    ]
)

LANGUAGES = ("en", "es", "ca")
_LISTS = Path(__file__).with_name("stopwords")

# Function words of one language that are everyday content words of another ("sea", "son", "van" are
# Spanish/Catalan auxiliaries and English nouns): when a text's language is unknown they are kept.
CROSS_LANGUAGE_CONTENT = frozenset(
    ["sea", "son", "hay", "soy", "era", "sin", "van", "cap", "sense", "fins", "tot", "res", "pel"]
)

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@[\w.]+")
# A word: letters/digits/underscore runs, optionally joined by a Catalan middle dot or apostrophe-free.
_WORD = re.compile(r"[^\W_]+(?:[·.][^\W_]+)*", re.UNICODE)


@lru_cache(maxsize=8)
def language_stop_words(language: str) -> frozenset[str]:
    """The function words of one language (empty for a language without a list)."""
    path = _LISTS / f"{language}.txt"
    if not path.is_file():
        return frozenset()
    lines = path.read_text(encoding="utf-8").splitlines()
    return frozenset(unicodedata.normalize("NFC", w.strip().lower()) for w in lines
                     if w.strip() and not w.lstrip().startswith("#"))


@lru_cache(maxsize=16)
def stop_words(languages: tuple[str, ...] | str | None = None) -> frozenset[str]:
    """Function words to drop from a text in ``languages`` (a code, a tuple, or None when unknown).

    A known language gets its own list; an unknown one gets the union of the en/es/ca lists minus the
    words that are content words in one of the other languages. The platform filler is always included.
    """
    if isinstance(languages, str):
        languages = (languages,)
    if languages:
        out: set[str] = set(CUSTOM_STOP_WORDS)
        for code in languages:
            out |= language_stop_words(code)
        return frozenset(out)
    union: set[str] = set()
    for code in LANGUAGES:
        union |= language_stop_words(code)
    return frozenset((union - CROSS_LANGUAGE_CONTENT) | CUSTOM_STOP_WORDS)


def fold(word: str) -> str:
    """Accent- and case-free form of a word or name ("Gràcia" → "gracia", "Málaga" → "malaga", "niño" →
    "nino"); compatibility forms too (full-width letters, ligatures); the middle dot stays. The one folding
    of the project: query words (``space.spelling``) and the topic's names and cities (``train.corpus``)."""
    decomposed = unicodedata.normalize("NFKD", word.lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def words(text: str) -> list[str]:
    """All word tokens of ``text`` (lowercased, NFC), stop words included; numbers-only tokens dropped."""
    text = unicodedata.normalize("NFC", text or "").lower()
    text = _URL.sub(" ", text)
    text = _MENTION.sub(" ", text)
    text = text.replace("#", " ")
    out = []
    for tok in _WORD.findall(text):
        tok = tok.strip(".")
        if len(tok) < 2 or tok.replace(".", "").replace("·", "").isdigit():  # "3.14", "0·5": numbers
            continue
        out.append(tok)
    return out


def tokenize(text: str, stop: Iterable[str] | None = None, language: str | None = None) -> list[str]:
    """Content tokens of ``text``: :func:`words` minus ``stop`` (default: the function words of
    ``language``, or of every supported language when it is unknown)."""
    stopset = stop_words(language) if stop is None else frozenset(stop)
    return [w for w in words(text) if w not in stopset]


def word_count(text: str) -> int:
    """How many words a caption has once ``#`` becomes a space (the short-caption filter's measure)."""
    return len(words(text))
