"""Examples that answer: the words /start, /help and empty inline queries suggest, taken from the served
bundle (its most frequent words in the user's language, else overall) and each checked with the engine
before it is shown, so an example never meets "I don't know". Chosen once per bundle version and language.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from bot.engine_answers import Stats
from bot.engine_client import EngineClient, EngineRequestError

log = logging.getLogger(__name__)

CANDIDATES = 12  # frequent words tried, in order, until enough answer
NO_CODE = frozenset({"", "?", "unknown", "und"})  # how a corpus may write "language not known"


@dataclass(frozen=True)
class Examples:
    """Queries the served bundle answers: ``images`` and ``related`` for the commands, ``subtract``
    ("word -other") when a pair answers, ``inline`` for inline mode, ``filtered`` ("word lang:xx") when
    the corpus has several languages (``codes``, most posts first)."""

    images: str
    related: str
    inline: str
    subtract: str | None
    filtered: str | None
    codes: tuple[str, ...]


async def _answers_images(engine: EngineClient, query: str, lang: str | None = None) -> bool:
    try:
        answer = await engine.images(query, k=1, lang=lang)
    except EngineRequestError:
        return False
    return bool(answer.images) and not answer.unknown


async def _answers_related(engine: EngineClient, query: str) -> list[str]:
    try:
        answer = await engine.related(query, k=5)
    except EngineRequestError:
        return []
    return [] if answer.unknown else [w.word for w in answer.words]


def _candidates(stats: Stats, lang: str | None) -> list[str]:
    words = [w.word for w in stats.words(lang)] if lang else []
    words += [w.word for w in stats.top_words]
    return list(dict.fromkeys(w for w in words if w and " " not in w))[:CANDIDATES]


async def _good_words(engine: EngineClient, words: Sequence[str], want: int) -> list[tuple[str, list[str]]]:
    """The first ``want`` words that find images and related words, with those related words."""
    good: list[tuple[str, list[str]]] = []
    for word in words:
        found, near = await asyncio.gather(_answers_images(engine, word), _answers_related(engine, word))
        if found and near:
            good.append((word, near))
            if len(good) == want:
                break
    return good


async def _subtraction(engine: EngineClient, word: str, near: Sequence[str]) -> str | None:
    for other in near:
        query = f"{word} -{other}"
        if await _answers_images(engine, query):
            return query
    return None


async def _filtered(engine: EngineClient, stats: Stats, lang: str, codes: Sequence[str]) -> str | None:
    """"word lang:xx" for the user's language when the corpus has it (else its main one)."""
    if len(codes) < 2:
        return None
    code = lang if lang in codes else codes[0]
    for word in _candidates(stats, code):
        if await _answers_images(engine, word, lang=code):
            return f"{word} lang:{code}"
    return None


async def choose_examples(engine: EngineClient, stats: Stats, lang: str) -> Examples | None:
    """Examples for a user of ``lang`` on the bundle ``stats`` describes (None: no word answers)."""
    good = await _good_words(engine, _candidates(stats, lang), want=3)
    if not good:
        log.warning("bundle %s: none of its frequent words answers; /help shows no examples", stats.version)
        return None
    words = [w for w, _ in good]
    codes = tuple(c for c, _ in sorted(stats.languages.items(), key=lambda kv: -kv[1]) if c not in NO_CODE)
    return Examples(
        images=words[0],
        related=words[min(1, len(words) - 1)],
        inline=words[-1],
        subtract=await _subtraction(engine, *good[0]),
        filtered=await _filtered(engine, stats, lang, codes),
        codes=codes,
    )


class ExampleBook:
    """The examples of each (bundle version, language), chosen once."""

    def __init__(self) -> None:
        self._chosen: dict[tuple[str, str], Examples | None] = {}
        self._lock = asyncio.Lock()

    async def get(self, engine: EngineClient, lang: str) -> Examples | None:
        """The examples for ``lang`` on the bundle the engine serves now."""
        stats = await engine.stats()
        key = (stats.version, lang)
        if key not in self._chosen:
            async with self._lock:
                if key not in self._chosen:
                    self._chosen = {k: v for k, v in self._chosen.items() if k[0] == stats.version}
                    self._chosen[key] = await choose_examples(engine, stats, lang)
        return self._chosen[key]
