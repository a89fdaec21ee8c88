"""Sending to a chat: the chat action, picture captions (crediting the post), and albums that reuse
Telegram's file_ids."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import textwrap
from collections.abc import Sequence

from telegram import InputMediaPhoto, Message
from telegram.error import BadRequest, TelegramError

from bot.context import BotContext
from bot.engine_answers import ImageHit
from bot.engine_client import EngineRequestError
from bot.messages import EN, number, text
from bot.services import Services, services

log = logging.getLogger(__name__)

# An Instagram post's shortcode (instaloader's post ids); a post of several pictures adds "_<n>".
_SHORTCODE = re.compile(r"([A-Za-z0-9_-]{11})(?:_\d{1,2})?")


def shorten(caption: str, width: int = 90) -> str:
    """A caption cut to ``width`` characters on a word boundary."""
    return textwrap.shorten(" ".join(caption.split()), width=width, placeholder="…")


def post_link(hit: ImageHit) -> str | None:
    """The Instagram address of the hit's post, when its id is an Instagram shortcode."""
    post = hit.post_id or hit.id.split("~")[0]
    match = _SHORTCODE.fullmatch(post)
    return f"https://www.instagram.com/p/{match.group(1)}/" if match else None


def credit(hit: ImageHit, lang: str = EN) -> str:
    """Who posted the picture, and where ('' when the corpus does not say who)."""
    if not hit.user:
        return ""
    link = post_link(hit)
    return text(lang, "credit", user=hit.user.lstrip("@")) + (f" · {link}" if link else "")


def hit_caption(hit: ImageHit, width: int = 90, lang: str = EN) -> str:
    """A picture's caption: its score and shortened text, then the post's credit when there is one."""
    caption = f"{number(lang, hit.score, 2)} · {shorten(hit.caption, width)}"
    by = credit(hit, lang)
    return f"{caption}\n{by}" if by else caption


async def chat_action(context: BotContext, chat_id: int, action: str) -> None:
    """Show "uploading…"/"typing…"; a chat action is a courtesy, so it never fails an answer."""
    with contextlib.suppress(TelegramError):
        await context.bot.send_chat_action(chat_id, action)


def picture_key(version: str, hit: ImageHit, size: int) -> str:
    """The file_id cache's key of a picture: ids may name other pictures in the next bundle."""
    return f"{version}:{hit.id}:{size}"


async def _upload(s: Services, hit: ImageHit) -> bytes | None:
    # Telegram cannot reach a private engine URL, so the first time we upload the bytes ourselves.
    try:
        return await s.engine.image_bytes(hit.id, size=s.settings.thumb_size)
    except EngineRequestError as exc:  # e.g. a file gone from the server: show the others
        log.warning("image %s not available: %s", hit.id, exc.code)
        return None


async def send_album(
    context: BotContext, chat_id: int, hits: Sequence[ImageHit], version: str = "", quiet: bool = False
) -> dict[str, str]:
    """Send hits as one album (or one photo), uploading bytes only for images Telegram has not seen;
    return the Telegram file_id of each picture sent, by hit id. ``quiet``: no notification, and no
    word when none of the pictures is available (for the inline cache chat)."""
    s = services(context)
    version = version or (await s.engine.stats()).version
    keys = [picture_key(version, h, s.settings.thumb_size) for h in hits]
    known = await s.file_ids.get_many(keys)  # one round trip for the album

    async def media_for(hit: ImageHit, key: str) -> str | bytes | None:
        return known.get(key) or await _upload(s, hit)

    media = list(await asyncio.gather(*(media_for(h, k) for h, k in zip(hits, keys, strict=True))))
    try:
        sent = await _send_pictures(context, chat_id, hits, media, quiet)
    except BadRequest as exc:
        if not any(isinstance(m, str) for m in media):
            raise
        # A remembered file_id can go stale (another bot token, a purge): upload them all again.
        log.warning("cached file_id refused (%s); uploading again", exc.message)
        media = list(await asyncio.gather(*(_upload(s, h) for h in hits)))
        sent = await _send_pictures(context, chat_id, hits, media, quiet)
    shown = [(h, k) for h, k, m in zip(hits, keys, media, strict=True) if m is not None]
    file_ids: dict[str, str] = {}
    for (hit, key), message in zip(shown, sent, strict=False):
        if message.photo:
            file_ids[hit.id] = message.photo[-1].file_id
            await s.file_ids.set(key, file_ids[hit.id])
    return file_ids


async def _send_pictures(
    context: BotContext,
    chat_id: int,
    hits: Sequence[ImageHit],
    media: Sequence[str | bytes | None],
    quiet: bool,
) -> Sequence[Message]:
    """One photo, or an album of 2–10, of the hits whose picture is available."""
    pairs = [(m, hit_caption(h, lang=context.lang))
             for h, m in zip(hits, media, strict=True) if m is not None]
    if not pairs:
        if not quiet:
            await context.bot.send_message(chat_id, context.t("unavailable"))
        return []
    if len(pairs) == 1:
        photo, caption = pairs[0]
        return [await context.bot.send_photo(chat_id, photo, caption=caption, disable_notification=quiet)]
    album = [InputMediaPhoto(m, caption=c) for m, c in pairs[:10]]
    return await context.bot.send_media_group(chat_id, album, disable_notification=quiet)
