"""What inline mode remembers: recent answers (so a repeated query costs no search), and per user the
newest query (so only the last keystroke of a burst is searched) and the last page of pictures shown
(the stand-in answer for the keystrokes that were not searched)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from telegram import InlineQueryResult

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@dataclass(frozen=True)
class InlinePage:
    """One answer: its results and the offset of the next page ("" when it is the last)."""

    results: list[InlineQueryResult]
    next_offset: str = ""


@dataclass
class InlineMemory:
    """Recent pages by (bundle version, query, language, offset, user language); per user, the newest
    query id and the last page with pictures they were shown."""

    capacity: int = 2048
    pages: OrderedDict[Hashable, InlinePage] = field(default_factory=OrderedDict)
    latest: OrderedDict[int, str] = field(default_factory=OrderedDict)
    shown: OrderedDict[int, InlinePage] = field(default_factory=OrderedDict)
    searches: dict[int, int] = field(default_factory=dict)  # per user: searches finished so far
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def page(self, key: Hashable) -> InlinePage | None:
        """A remembered answer."""
        found = self.pages.get(key)
        if found is not None:
            self.pages.move_to_end(key)
        return found

    def keep(self, key: Hashable, page: InlinePage) -> None:
        """Remember an answer (the oldest beyond ``capacity`` are forgotten)."""
        self.pages[key] = page
        _bound(self.pages, self.capacity)

    def typed(self, user: int, query_id: str) -> None:
        """``query_id`` is now the user's newest query."""
        self.latest[user] = query_id
        self.latest.move_to_end(user)
        _bound(self.latest, 10 * self.capacity)

    def is_latest(self, user: int, query_id: str) -> bool:
        """Whether no newer query of the user came since ``query_id``."""
        return self.latest.get(user) == query_id

    async def searched(self, user: int, page: InlinePage | None) -> None:
        """A search of the user finished; ``page`` is what they were shown (None: nothing to show)."""
        async with self._changed:
            if page is not None and page.results:
                self.shown[user] = page
                self.shown.move_to_end(user)
                _bound(self.shown, 10 * self.capacity)
            self.searches[user] = self.searches.get(user, 0) + 1
            self._changed.notify_all()

    async def stand_in(self, user: int, timeout_s: float) -> InlinePage | None:
        """The last page the user was shown; when there is none yet, wait (at most ``timeout_s``) for
        their next search to finish and take its page."""
        async with self._changed:
            if user in self.shown:
                return self.shown[user]
            before = self.searches.get(user, 0)
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: self.searches.get(user, 0) > before), timeout_s
                )
            except TimeoutError:
                return None
            return self.shown.get(user)


def _bound(items: OrderedDict[K, V], capacity: int) -> None:
    while len(items) > capacity:
        items.popitem(last=False)
