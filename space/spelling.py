"""Query words the space does not know, matched to the nearest known spelling.

Three steps, each only when the previous one found nothing: the word as typed; its accent- and case-free
form (:func:`space.tokenize.fold`: "gracia" finds "gràcia", "nino" finds "niño"); the vocabulary word at
the smallest Damerau-Levenshtein distance (one edit for words of 4–7 letters, two from 8), the most
frequent one on a tie. Candidates come from a delete-neighbourhood index (SymSpell's idea): every
vocabulary form with one letter deleted, so a lookup touches a handful of words instead of all of them.

Bounded by design: a lookup builds every one- and two-letter deletion of the word, which grows with the
square of its length (a 499-letter word: ~125,000 keys and 1.8 s of a server's event loop). So only words of
at most :data:`MAX_CORRECTED_LENGTH` letters are corrected (and none longer than the longest vocabulary word
plus the edits allowed, which no correction could reach), and a speller remembers its recent answers, since
one query asks for the same word several times.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from space.tokenize import fold

MIN_CORRECTED_LENGTH = 4
# Longer words are never corrected: a 30-letter word makes ~470 keys to look up, and no real word is longer.
MAX_CORRECTED_LENGTH = 30
# Corrections remembered per speller (a query's word is looked up several times per request).
REMEMBERED = 4096
_UNKNOWN = object()


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1 :] for i in range(len(word))}


def edit_distance(a: str, b: str) -> int:
    """Damerau-Levenshtein distance (adjacent transpositions count one edit)."""
    prev2: list[int] = []
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                cur[j] = min(cur[j], prev2[j - 2] + 1)
        prev2, prev = prev, cur
    return prev[-1]


def max_edits(word: str) -> int:
    """How many edits a word of this length may be corrected by (0: too short to guess, or too long)."""
    n = len(word)
    return 0 if n < MIN_CORRECTED_LENGTH or n > MAX_CORRECTED_LENGTH else 1 if n < 8 else 2


class Speller:
    """Resolves a token to a vocabulary row: exact, accent-free, then nearest spelling."""

    def __init__(self, words: Sequence[str], counts: np.ndarray) -> None:
        self.words = list(words)
        self.counts = np.asarray(counts)
        self.index = {w: i for i, w in enumerate(self.words)}
        by_count = np.argsort(-self.counts, kind="stable")
        self.folded: dict[str, int] = {}
        for i in by_count.tolist():  # most frequent first: it keeps a shared folded form
            self.folded.setdefault(fold(self.words[i]), i)
        self._neighbours: dict[str, list[str]] | None = None
        # No correction is within reach of a word this much longer than every vocabulary word.
        self.longest = max((len(f) for f in self.folded), default=0)
        # A plain dict, emptied when full: an lru_cache of the bound method would make a reference cycle,
        # which the engine's gc.freeze() after a load would keep (and a retired bundle's speller with it).
        self._remembered: dict[str, int | None] = {}

    def prepare(self) -> None:
        """Build the spelling index now (a server does it while loading, not on a user's first typo)."""
        self._delete_index()

    def _delete_index(self) -> dict[str, list[str]]:
        if self._neighbours is None:
            index: dict[str, list[str]] = defaultdict(list)
            for form in self.folded:
                for key in {form} | _deletes(form):
                    index[key].append(form)
            self._neighbours = dict(index)
        return self._neighbours

    def exact_or_folded(self, token: str) -> int | None:
        """The row of ``token`` as typed or without accents, else None."""
        row = self.index.get(token)
        return row if row is not None else self.folded.get(fold(token))

    def correctable(self, token: str) -> bool:
        """Whether :meth:`nearest` would search for ``token`` (cheap: its length only)."""
        form = fold(token)
        limit = max_edits(form)
        return limit > 0 and len(form) <= self.longest + limit

    def nearest(self, token: str) -> int | None:
        """The row of the closest known spelling within :func:`max_edits`, else None."""
        if not self.correctable(token):
            return None
        found = self._remembered.get(token, _UNKNOWN)  # one step: pool threads share the speller
        if found is not _UNKNOWN:
            return found  # type: ignore[return-value]
        row = self._nearest(token)
        if len(self._remembered) >= REMEMBERED:
            self._remembered.clear()
        self._remembered[token] = row
        return row

    def _nearest(self, token: str) -> int | None:
        form = fold(token)
        limit = max_edits(form)
        neighbours = self._delete_index()
        keys = {form} | _deletes(form)
        if limit > 1:
            keys |= {d for k in list(keys) for d in _deletes(k)}
        candidates = {c for k in keys for c in neighbours.get(k, ())}
        best: tuple[int, int, str] | None = None
        for cand in candidates:
            d = edit_distance(form, cand)
            if d <= limit:
                row = self.folded[cand]
                rank = (d, -int(self.counts[row]), cand)
                if best is None or rank < best:
                    best = rank
        return None if best is None else self.folded[best[2]]

    def resolve(self, token: str) -> tuple[int | None, bool]:
        """(row, corrected): the row ``token`` stands for, and whether its spelling was changed to get it."""
        row = self.exact_or_folded(token)
        if row is not None:
            return row, self.words[row] != token
        row = self.nearest(token)
        return row, row is not None
