"""Answers to searches, shared by commands, buttons and plain text: images for words (paged with
"More ▶"), words near words (with 🔎/🖼 buttons), images like a photo, a photo's hashtags, inline results.

The engine answers unknown words as empty results plus an ``unknown`` list; the answers name them and
suggest known words.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar
from urllib.parse import quote

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, InlineQueryResultPhoto
from telegram.constants import ChatAction
from telegram.ext import ContextTypes

from bot.callbacks import IMAGES, MORE, RELATED, SIMILAR, callback_data
from bot.engine_answers import ImageAnswer, ScoredWord, Stats
from bot.engine_client import EngineRequestError, EngineUnavailable
from bot.sending import chat_action, hit_caption, send_album
from bot.services import ShortKeys, services

T = TypeVar("T")


def suggest(words: Sequence[str], stats: Stats) -> list[str]:
    """Known words that look like the unknown ones (from the stats' top words)."""
    vocab = [w.word for w in stats.top_words]
    out: list[str] = []
    for word in words:
        out += [m for m in difflib.get_close_matches(word, vocab, n=2, cutoff=0.6) if m not in out]
    return out[:4]


def _known_part(query: str, unknown: Sequence[str]) -> str:
    bad = {u.lower() for u in unknown}
    return " ".join(t for t in query.split() if t.lstrip("-").lower() not in bad and not t.startswith("-"))


async def unknown_note(context: ContextTypes.DEFAULT_TYPE, query: str, unknown: Sequence[str]) -> str:
    """Name the unknown words and suggest known ones (near the query's known part, or look-alikes)."""
    s = services(context)
    known_query = _known_part(query, unknown)
    hints: list[str] = []
    if known_query.strip():
        with contextlib.suppress(EngineRequestError, EngineUnavailable):
            hints = [w.word for w in (await s.engine.related(known_query, k=4)).words]
    if not hints:
        with contextlib.suppress(EngineRequestError, EngineUnavailable):
            hints = suggest(unknown, await s.engine.stats())
    note = f"I don't know: {', '.join(unknown)}."
    return note + (f" Try: {', '.join(hints)}." if hints else "")


def word_buttons(words: Sequence[str], keys: ShortKeys) -> InlineKeyboardMarkup:
    """Follow-up buttons: related words and images for each word."""
    rows = [
        [
            InlineKeyboardButton(f"🔎 {w}", callback_data=callback_data(RELATED, w, keys)),
            InlineKeyboardButton(f"🖼 {w}", callback_data=callback_data(IMAGES, w, keys)),
        ]
        for w in words[:5]
    ]
    return InlineKeyboardMarkup(rows)


async def _ask(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    action: str,
    refusal: str,
    request: Callable[[], Awaitable[T]],
) -> T | None:
    """The engine's answer, after showing ``action``; None when it refused the request (the user is
    told "<refusal>: <why>")."""
    await chat_action(context, chat_id, action)
    try:
        return await request()
    except EngineRequestError as exc:
        await context.bot.send_message(chat_id, f"{refusal}: {exc}")
        return None


async def _search(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    query: str,
    example: str,
    action: str,
    refusal: str,
    request: Callable[[str], Awaitable[T]],
) -> T | None:
    """A text search's answer; None when the query is empty (the user gets ``example``) or refused."""
    if not query:
        await context.bot.send_message(chat_id, example)
        return None
    return await _ask(context, chat_id, action, refusal, lambda: request(query))


async def answer_images(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, query: str, offset: int = 0
) -> None:
    """Search images for a query and send them as an album with a "more" button."""
    s = services(context)
    query = query.strip()
    k = s.settings.album_size
    answer = await _search(
        context, chat_id, query, "Tell me what to look for, e.g. /images healthy restaurant",
        ChatAction.UPLOAD_PHOTO, "I can't search that", lambda q: s.engine.images(q, k=k, offset=offset),
    )
    if answer is None:
        return
    notes = [await unknown_note(context, query, answer.unknown)] if answer.unknown else []
    if not answer.images:
        notes.append("No more images." if offset else f"No images found for «{query}».")
        await context.bot.send_message(chat_id, " ".join(notes))
        return
    if not answer.confident:
        notes.append(f"There is no confident match for «{query}»; these are the closest images.")
    await send_album(context, chat_id, answer.images, answer.version)
    first, last = offset + 1, offset + len(answer.images)
    text = " ".join([f"Images for «{query}» ({first}–{last}).", *notes])
    markup = None
    if len(answer.images) >= k:
        more = callback_data(MORE, query, s.keys, extra=str(offset + k))
        markup = InlineKeyboardMarkup([[InlineKeyboardButton("More ▶", callback_data=more)]])
    await context.bot.send_message(chat_id, text, reply_markup=markup)


async def answer_related(context: ContextTypes.DEFAULT_TYPE, chat_id: int, query: str) -> None:
    """Send the nearest words of a query, with follow-up buttons."""
    s = services(context)
    query = query.strip()
    answer = await _search(
        context, chat_id, query, "Tell me a word, e.g. /related sants",
        ChatAction.TYPING, "I can't relate that", lambda q: s.engine.related(q, k=s.settings.related_k),
    )
    if answer is None:
        return
    lines = [f"Words near «{query}»:"]
    lines += [f"{w.word}  {w.score:.2f}" for w in answer.words]
    if answer.unknown:
        lines.append(await unknown_note(context, query, answer.unknown))
    if not answer.words:
        lines.append("(nothing near enough)")
    else:
        lines.append("Tap a word: 🔎 related words, 🖼 images.")
    await context.bot.send_message(
        chat_id, "\n".join(lines), reply_markup=word_buttons([w.word for w in answer.words], s.keys)
    )


async def answer_similar(context: ContextTypes.DEFAULT_TYPE, chat_id: int, image: bytes) -> None:
    """Send images similar to an image."""
    s = services(context)
    answer = await _ask(
        context, chat_id, ChatAction.UPLOAD_PHOTO, "I can't read that image",
        lambda: s.engine.similar(image, k=s.settings.album_size),
    )
    if answer is None:
        return
    if not answer.images:
        await context.bot.send_message(chat_id, "No similar images found.")
        return
    await send_album(context, chat_id, answer.images, answer.version)


def hashtags_reply(
    tags: Sequence[ScoredWord], file_id: str, keys: ShortKeys
) -> tuple[str, InlineKeyboardMarkup]:
    """A photo's hashtags with their scores, and the button for images like it."""
    text = " ".join(f"#{t.word}" for t in tags) + "\n" + ", ".join(f"{t.word} {t.score:.2f}" for t in tags)
    button = InlineKeyboardButton("Similar images", callback_data=callback_data(SIMILAR, file_id, keys))
    return text, InlineKeyboardMarkup([[button]])


def inline_results(answer: ImageAnswer, offset: int, engine_url: str) -> list[InlineQueryResultPhoto]:
    """Photo results that Telegram fetches from the engine's public URL itself."""
    return [
        InlineQueryResultPhoto(
            id=f"{h.id}-{offset + i}"[:64],
            # Bounded in size: Telegram fetches inline photos itself and refuses JPEGs over 5 MB.
            photo_url=f"{engine_url}/v1/images/{quote(h.id)}?size=1024",
            thumbnail_url=f"{engine_url}/v1/images/{quote(h.id)}?size=160",
            caption=hit_caption(h, 200),
        )
        for i, h in enumerate(answer.images)
    ]
