"""Answers to searches, shared by commands, buttons and plain text: images for words (paged with
"More ▶", narrowed to one language with ``lang:xx``), words near words (with 🔎/🖼 buttons), images like a
photo, a photo's hashtags.

The engine answers unknown words as empty results plus an ``unknown`` list; the answers name them and
suggest known words.
"""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from telegram import InlineKeyboardMarkup
from telegram.constants import ChatAction

from bot.callbacks import IMAGES, MORE, RELATED, SIMILAR, button
from bot.context import BotContext
from bot.engine_answers import ScoredWord, Stats
from bot.engine_client import EngineRequestError, EngineUnavailable
from bot.examples import NO_CODE
from bot.sending import chat_action, send_album
from bot.services import services

T = TypeVar("T")

_LANG = re.compile(r"(?i)^lang:([a-z]{2,8})$")


def split_lang(query: str) -> tuple[str, str | None]:
    """A query's words and the language of its ``lang:xx`` filter (None without one)."""
    words, lang = [], None
    for token in query.split():
        match = _LANG.match(token)
        if match:
            lang = match.group(1).lower()
        else:
            words.append(token)
    return " ".join(words), lang


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


def corrected_note(context: BotContext, corrected: dict[str, str]) -> list[str]:
    """"Showing results for …" when the engine matched query words to other spellings."""
    if not corrected:
        return []
    return [context.t("corrected", words=", ".join(f"{v} ({k})" for k, v in corrected.items()))]


async def unknown_note(context: BotContext, query: str, unknown: Sequence[str]) -> str:
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
    note = context.t("dont_know", words=", ".join(unknown))
    return note + (context.t("try", words=", ".join(hints)) if hints else "")


def word_buttons(words: Sequence[str]) -> InlineKeyboardMarkup | None:
    """Follow-up buttons: related words and images for each word (None when there are no words)."""
    rows = [[button(f"🔎 {w}", RELATED, w), button(f"🖼 {w}", IMAGES, w)] for w in words[:5]]
    return InlineKeyboardMarkup(rows) if rows else None


async def _ask(
    context: BotContext, chat_id: int, action: str, refusal: str, request: Callable[[], Awaitable[T]]
) -> T | None:
    """The engine's answer, after showing ``action``; None when it refused the request (the user is
    told the ``refusal`` message with the engine's reason)."""
    await chat_action(context, chat_id, action)
    try:
        return await request()
    except EngineRequestError as exc:
        await context.bot.send_message(chat_id, context.t(refusal, why=exc))
        return None


async def _example(context: BotContext, kind: str) -> str:
    """An example query that answers, for "tell me what to look for" (a placeholder without one)."""
    with contextlib.suppress(EngineUnavailable, EngineRequestError):
        examples = await services(context).examples.get(services(context).engine, context.lang)
        if examples is not None:
            return examples.images if kind == IMAGES else examples.related
    return "…"


async def _language_refused(context: BotContext, chat_id: int, lang: str) -> bool:
    """Say so (and return True) when the corpus has no posts in ``lang``."""
    codes = sorted(c for c in (await services(context).engine.stats()).languages if c not in NO_CODE)
    if lang in codes:
        return False
    known = ", ".join(codes) or "—"
    await context.bot.send_message(chat_id, context.t("unknown_lang", code=lang, codes=known))
    return True


async def _images_markup(
    context: BotContext, query: str, lang: str | None, more: int | None
) -> InlineKeyboardMarkup | None:
    """"More ▶" (from offset ``more``) and, when the corpus has several languages and the query no
    filter, one button per language."""
    rows = [[button(context.t("more"), MORE, query, more)]] if more is not None else []
    if lang is None:
        codes = [c for c in (await services(context).engine.stats()).languages if c not in NO_CODE]
        if len(codes) > 1:
            rows.append([button(context.t("only_lang", lang=c), IMAGES, f"{query} lang:{c}")
                         for c in codes[:4]])
    return InlineKeyboardMarkup(rows) if rows else None


async def answer_images(context: BotContext, chat_id: int, query: str, offset: int = 0) -> None:
    """Search images for a query (``lang:xx`` narrows it to one language) and send them as an album
    with a "More ▶" button."""
    s = services(context)
    query = query.strip()
    words, lang = split_lang(query)
    if not words:
        await context.bot.send_message(chat_id, context.t("ask_images", q=await _example(context, IMAGES)))
        return
    if lang is not None and await _language_refused(context, chat_id, lang):
        return
    k = s.settings.album_size
    answer = await _ask(context, chat_id, ChatAction.UPLOAD_PHOTO, "cant_search",
                        lambda: s.engine.images(words, k=k, offset=offset, lang=lang))
    if answer is None:
        return
    notes = [await unknown_note(context, words, answer.unknown)] if answer.unknown else []
    notes += corrected_note(context, answer.corrected)
    if not answer.images:
        notes.append(context.t("no_more") if offset else context.t("no_images", q=query))
        await context.bot.send_message(chat_id, " ".join(notes))
        return
    if not answer.confident:
        notes.append(context.t("not_confident", q=query))
    await send_album(context, chat_id, answer.images, answer.version)
    first, last = offset + 1, offset + len(answer.images)
    text = " ".join([context.t("images_for", q=query, first=first, last=last), *notes])
    markup = await _images_markup(context, query, lang, offset + k if len(answer.images) >= k else None)
    await context.bot.send_message(chat_id, text, reply_markup=markup)


async def answer_related(context: BotContext, chat_id: int, query: str) -> None:
    """Send the nearest words of a query, with follow-up buttons."""
    s = services(context)
    query = query.strip()
    if not query:
        await context.bot.send_message(chat_id, context.t("ask_related", q=await _example(context, RELATED)))
        return
    answer = await _ask(context, chat_id, ChatAction.TYPING, "cant_relate",
                        lambda: s.engine.related(query, k=s.settings.related_k))
    if answer is None:
        return
    note = [await unknown_note(context, query, answer.unknown)] if answer.unknown else []
    note += corrected_note(context, answer.corrected)
    if answer.words:
        lines = [context.t("words_near", q=query),
                 *(f"{w.word}  {context.num(w.score, 2)}" for w in answer.words), *note,
                 context.t("tap_word")]
    else:  # only unknown words: say which (and what to try) rather than "words near" nothing
        lines = note or [context.t("words_near", q=query), context.t("nothing_near")]
    # No words, no buttons: Telegram refuses an empty inline keyboard.
    markup = word_buttons([w.word for w in answer.words])
    await context.bot.send_message(chat_id, "\n".join(lines), reply_markup=markup)


async def answer_similar(context: BotContext, chat_id: int, image: bytes) -> None:
    """Send images similar to an image."""
    s = services(context)
    answer = await _ask(context, chat_id, ChatAction.UPLOAD_PHOTO, "cant_read_image",
                        lambda: s.engine.similar(image, k=s.settings.album_size))
    if answer is None:
        return
    if not answer.images:
        await context.bot.send_message(chat_id, context.t("no_similar"))
        return
    await send_album(context, chat_id, answer.images, answer.version)


def hashtags_reply(
    context: BotContext, tags: Sequence[ScoredWord], file_id: str
) -> tuple[str, InlineKeyboardMarkup]:
    """A photo's hashtags with their scores, and the button for images like it."""
    scores = ", ".join(f"{t.word} {context.num(t.score, 2)}" for t in tags)
    text = " ".join(f"#{t.word}" for t in tags) + "\n" + scores
    return text, InlineKeyboardMarkup([[button(context.t("similar"), SIMILAR, file_id)]])

