"""What inline mode remembers: recent answers (so a repeated query costs no search), and per user the
newest query (so only the last keystroke of a burst is searched) and the last page of pictures shown
(the stand-in answer for the keystrokes that were not searched)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass, field

from cachetools import LRUCache
from telegram import InlineQueryResult

CAPACITY = 2048  # answers remembered; ten times as many users


@dataclass(frozen=True)
class InlinePage:
    """One answer: its results and the offset of the next page ("" when it is the last)."""

    results: list[InlineQueryResult]
    next_offset: str = ""


@dataclass
class InlineMemory:
    """Recent pages by (bundle version, query, language, offset, user language); per user, the newest
    query id and the last page with pictures they were shown."""

    capacity: int = CAPACITY
    pages: LRUCache[Hashable, InlinePage] = field(init=False)
    latest: LRUCache[int, str] = field(init=False)
    shown: LRUCache[int, InlinePage] = field(init=False)
    searches: dict[int, int] = field(default_factory=dict)  # per user: searches finished so far
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def __post_init__(self) -> None:
        self.pages = LRUCache(maxsize=self.capacity)
        self.latest = LRUCache(maxsize=10 * self.capacity)
        self.shown = LRUCache(maxsize=10 * self.capacity)

    def page(self, key: Hashable) -> InlinePage | None:
        """A remembered answer."""
        return self.pages.get(key)

    def keep(self, key: Hashable, page: InlinePage) -> None:
        """Remember an answer (the least recently used beyond ``capacity`` are forgotten)."""
        self.pages[key] = page

    def typed(self, user: int, query_id: str) -> None:
        """``query_id`` is now the user's newest query."""
        self.latest[user] = query_id

    def is_latest(self, user: int, query_id: str) -> bool:
        """Whether no newer query of the user came since ``query_id``."""
        return self.latest.get(user) == query_id

    async def searched(self, user: int, page: InlinePage | None) -> None:
        """A search of the user finished; ``page`` is what they were shown (None: nothing to show)."""
        async with self._changed:
            if page is not None and page.results:
                self.shown[user] = page
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

