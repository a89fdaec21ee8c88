"""Parsing of user queries: ``food barcelona`` adds words, ``beer -estrella`` subtracts one."""

from __future__ import annotations

from dataclasses import dataclass

from space.errors import EmptyQuery
from space.tokenize import stop_words, words

MAX_QUERY_CHARS = 500


@dataclass(frozen=True)
class Query:
    """A parsed query: words to add and words to subtract (already tokenised)."""

    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def normalised(self) -> str:
        """A canonical string for cache keys: sorted terms, negatives prefixed with ``-``."""
        return " ".join(sorted(self.positive) + sorted("-" + w for w in self.negative))


def parse_query(text: str, max_chars: int = MAX_QUERY_CHARS) -> Query:
    """Split ``text`` into positive and negative terms; raise :class:`EmptyQuery` when nothing is left.

    Function words of the supported languages are dropped, except those that are content words in
    another of them ("sea", "son", "van" in English), which the text space ignores only when it does
    not know them. A query of function words only is empty.
    """
    if text is None or not text.strip():
        raise EmptyQuery("The query is empty: send one or more words, e.g. 'beach' or 'beer -estrella'.")
    if len(text) > max_chars:
        raise EmptyQuery(f"The query is too long ({len(text)} characters, at most {max_chars}).")
    stop = stop_words()
    pos: list[str] = []
    neg: list[str] = []
    for part in text.split():
        target = neg if part.startswith("-") and len(part) > 1 else pos
        for w in words(part.lstrip("-") if target is neg else part):
            if w not in stop and w not in target:
                target.append(w)
    if not pos and not neg:
        raise EmptyQuery("The query has no meaningful word (only function words, numbers or symbols).")
    return Query(tuple(pos), tuple(neg))
