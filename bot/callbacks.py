"""Callback data of the inline buttons: ``kind|extra|value``, within Telegram's 64 bytes.

A value too long for the limit (a long query, a file_id) travels as a short key instead, and the kind
is written in capitals to say so; a restarted bot may have forgotten the key (the button has expired).
"""

from __future__ import annotations

from bot.services import ShortKeys

MAX_CALLBACK = 64  # bytes: Telegram's limit on callback_data

MORE = "m"  # the next page of an image search; extra = the offset
RELATED = "r"  # words near a word
IMAGES = "i"  # images for a word
SIMILAR = "s"  # images like a photo; the value is its file_id


def callback_data(kind: str, value: str, keys: ShortKeys, extra: str = "") -> str:
    """Callback data ``kind|extra|value``, with a short key instead of the value when over 64 bytes."""
    data = f"{kind}|{extra}|{value}"
    if len(data.encode()) <= MAX_CALLBACK:
        return data
    return f"{kind.upper()}|{extra}|{keys.put(value)}"


def parse_callback_data(data: str, keys: ShortKeys) -> tuple[str, str, str | None]:
    """Split callback data into (kind, extra, value); value is None when its short key was forgotten."""
    kind, _, rest = data.partition("|")
    extra, _, value = rest.partition("|")
    if kind.isupper():
        return kind.lower(), extra, keys.get(value)
    return kind, extra, value
