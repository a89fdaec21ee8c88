"""Caption and query tokeniser: lowercase, Unicode-aware, hashtags become words.

Accents are kept ("gràcia", "cataluña"): the original system stripped non-ASCII letters and
printed "grcia". Catalan's middle dot ("col·lecció") stays inside a word.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

# Social-media filler that carries no topic: added to the maintained en/es/ca lists.
CUSTOM_STOP_WORDS = frozenset(
    [
        "photo",
        "photos",
        "foto",
        "fotos",
        "pic",
        "pics",
        "picture",
        "pictures",
        "image",
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
        "follow",
        "f4f",
        "photooftheday",
        "picoftheday",
        "instadaily",
        "tbt",
        "repost",
        "regram",
        "nofilter",
        "amazing",
        "love",
        "beautiful",
        "instalike",
        "likes",
    ]
)

LANGUAGES = ("en", "es", "ca")
_LANGUAGE_NAMES = {"en": "english", "es": "spanish", "ca": "catalan"}

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<!\w)@[\w.]+")
# A word: letters/digits/underscore runs, optionally joined by a Catalan middle dot or apostrophe-free.
_WORD = re.compile(r"[^\W_]+(?:[·.][^\W_]+)*", re.UNICODE)


@lru_cache(maxsize=1)
def stop_words(languages: tuple[str, ...] = LANGUAGES) -> frozenset[str]:
    """The union of the maintained stop-word lists for ``languages`` and the custom list."""
    from stop_words import get_stop_words

    words: set[str] = set(CUSTOM_STOP_WORDS)
    for code in languages:
        for w in get_stop_words(_LANGUAGE_NAMES.get(code, code)):
            words.update(_WORD.findall(unicodedata.normalize("NFC", w.lower())))
    return frozenset(words)


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


def tokenize(text: str, stop: Iterable[str] | None = None) -> list[str]:
    """Content tokens of ``text``: :func:`words` minus stop words (en/es/ca + custom by default)."""
    stopset = stop_words() if stop is None else frozenset(stop)
    return [w for w in words(text) if w not in stopset]


def word_count(text: str) -> int:
    """How many words a caption has once ``#`` becomes a space (the short-caption filter's measure)."""
    return len(words(text))
