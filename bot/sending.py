"""Sending to a chat: the chat action, picture captions, and albums that reuse Telegram's file_ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import textwrap
from collections.abc import Sequence

from telegram import InputMediaPhoto, Message
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bot.engine_answers import ImageHit
from bot.engine_client import EngineRequestError
from bot.services import services

log = logging.getLogger(__name__)


def shorten(text: str, width: int = 90) -> str:
    """A caption cut to ``width`` characters on a word boundary."""
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder="…")


def hit_caption(hit: ImageHit, width: int = 90) -> str:
    """A picture's caption: its score and its shortened text."""
    return f"{hit.score:.2f} · {shorten(hit.caption, width)}"


async def chat_action(context: ContextTypes.DEFAULT_TYPE, chat_id: int, action: str) -> None:
    """Show "uploading…"/"typing…"; a chat action is a courtesy, so it never fails an answer."""
    with contextlib.suppress(TelegramError):
        await context.bot.send_chat_action(chat_id, action)


async def send_album(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, hits: Sequence[ImageHit], version: str = ""
) -> None:
    """Send hits as one album (or one photo), uploading bytes only for images Telegram has not seen."""
    s = services(context)
    # Keys carry the bundle version: an id may name another picture in the next bundle.
    version = version or (await s.engine.stats()).version
    keys = [f"{version}:{h.id}:{s.settings.thumb_size}" for h in hits]

    async def upload(hit: ImageHit) -> bytes | None:
        # Telegram cannot reach a private engine URL, so the first time we upload the bytes ourselves.
        try:
            return await s.engine.image_bytes(hit.id, size=s.settings.thumb_size)
        except EngineRequestError as exc:  # e.g. a file gone from the server: show the others
            log.warning("image %s not available: %s", hit.id, exc.code)
            return None

    async def media_for(hit: ImageHit, key: str) -> str | bytes | None:
        return await s.file_ids.get(key) or await upload(hit)

    media = list(await asyncio.gather(*(media_for(h, k) for h, k in zip(hits, keys, strict=True))))
    try:
        sent = await _send_pictures(context, chat_id, hits, media)
    except BadRequest as exc:
        if not any(isinstance(m, str) for m in media):
            raise
        # A remembered file_id can go stale (another bot token, a purge): upload them all again.
        log.warning("cached file_id refused (%s); uploading again", exc.message)
        media = list(await asyncio.gather(*(upload(h) for h in hits)))
        sent = await _send_pictures(context, chat_id, hits, media)
    keys = [k for k, m in zip(keys, media, strict=True) if m is not None]
    for key, message in zip(keys, sent, strict=False):
        if message.photo:
            await s.file_ids.set(key, message.photo[-1].file_id)


async def _send_pictures(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    hits: Sequence[ImageHit],
    media: Sequence[str | bytes | None],
) -> Sequence[Message]:
    """One photo, or an album of 2–10, of the hits whose picture is available."""
    pairs = [(m, hit_caption(h)) for h, m in zip(hits, media, strict=True) if m is not None]
    if not pairs:
        await context.bot.send_message(chat_id, "Those pictures are not available right now.")
        return []
    if len(pairs) == 1:
        return [await context.bot.send_photo(chat_id, pairs[0][0], caption=pairs[0][1])]
    return await context.bot.send_media_group(chat_id, [InputMediaPhoto(m, caption=c) for m, c in pairs[:10]])
