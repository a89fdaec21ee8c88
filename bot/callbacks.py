"""What an inline button carries: a :class:`Button` (kind, value, offset).

The application runs with python-telegram-bot's ``arbitrary_callback_data``: Telegram only sees a
64-byte id, the :class:`Button` itself stays in PTB's callback-data cache, which the application's
persistence (:mod:`bot.persistence`) saves, so a button still works after the bot restarts. A button
evicted from the cache (the oldest beyond ``CALLBACK_KEYBOARDS`` keyboards) answers "expired".
"""

from __future__ import annotations

from typing import NamedTuple

from telegram import InlineKeyboardButton

CALLBACK_KEYBOARDS = 4096  # keyboards whose buttons are remembered (PTB's LRU cache size)

MORE = "m"  # the next page of an image search; offset = the first image of the page
RELATED = "r"  # words near a word
IMAGES = "i"  # images for a query
SIMILAR = "s"  # images like a photo; the value is its Telegram file_id
LANGUAGE = "l"  # the bot's language for this user: en, es, ca, or auto (the Telegram app's)


class Button(NamedTuple):
    """A button's action: ``kind`` (one of the constants above) on ``value``, from ``offset``."""

    kind: str
    value: str
    offset: int = 0


def button(label: str, kind: str, value: str, offset: int = 0) -> InlineKeyboardButton:
    """An inline button that will hand ``Button(kind, value, offset)`` to the callback handler."""
    return InlineKeyboardButton(label, callback_data=Button(kind, value, offset))


def as_button(data: object) -> Button | None:
    """The :class:`Button` of a callback query's data (a list after a JSON round trip), or None."""
    if isinstance(data, Button):
        return data
    if isinstance(data, list | tuple) and len(data) == 3:
        kind, value, offset = data
        if isinstance(kind, str) and isinstance(value, str) and isinstance(offset, int):
            return Button(kind, value, offset)
    return None
