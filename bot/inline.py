"""Inline mode (``@bot words`` in any chat): every query gets an answer.

Pictures go out as Telegram file ids (``InlineQueryResultCachedPhoto``): those the bot already holds, and
the others uploaded once to ``CACHE_CHAT_ID``; only without a cache chat does a picture fall back to its
URL, and only when ``ENGINE_PUBLIC_URL`` says where Telegram can fetch it. A burst of keystrokes is
debounced instead of rate-limited: each query waits ``inline_debounce_s`` and only the user's newest is
searched; the others are answered with the last pictures the user was shown (personal, uncached), so the
list does not flicker and no query is left unanswered. Answers are remembered (:mod:`bot.inline_memory`).
Each search (a first page after the debounce, or a later page) takes one of the user's rate-limit tokens,
as a message does: over the limit a query gets the stand-in, and no search, thumbnail fetch or upload.
"""

from __future__ import annotations

import asyncio
import logging

from telegram import (
    InlineQuery,
    InlineQueryResult,
    InlineQueryResultCachedPhoto,
    InlineQueryResultPhoto,
    InlineQueryResultsButton,
    Update,
)
from telegram.error import TelegramError

from bot.context import BotContext
from bot.engine_answers import ImageAnswer
from bot.engine_client import EngineRequestError, EngineUnavailable, NoBundle, image_path
from bot.inline_memory import InlinePage
from bot.search_answers import split_lang
from bot.sending import hit_caption, picture_key, send_album
from bot.services import services

log = logging.getLogger(__name__)

STAND_IN_WAIT_S = 6.0  # how long a superseded query waits for the newest one's pictures
BUTTON_TEXT = 64  # Telegram's limit on an InlineQueryResultsButton's text


def _button(label: str) -> InlineQueryResultsButton:
    """A button above the results that opens a private chat with the bot on /start help."""
    return InlineQueryResultsButton(text=label[:BUTTON_TEXT], start_parameter="help")


async def _file_ids(context: BotContext, answer: ImageAnswer) -> dict[str, str]:
    """The Telegram file id of each hit the bot holds or (with a cache chat) uploads now."""
    s = services(context)
    keys = {hit.id: picture_key(answer.version, hit, s.settings.thumb_size) for hit in answer.images}
    known = await s.file_ids.get_many(list(keys.values()))  # one round trip for the page
    held = {hit_id: known[key] for hit_id, key in keys.items() if key in known}
    missing = [h for h in answer.images if h.id not in held]
    cache_chat = s.settings.cache_chat_id
    if cache_chat is None:
        return held
    for start in range(0, len(missing), 10):  # an album holds 10
        try:
            album = missing[start:start + 10]
            held |= await send_album(context, cache_chat, album, answer.version, quiet=True)
        except TelegramError as exc:  # e.g. the bot was removed from the cache chat: use what it has
            log.warning("could not upload inline pictures to the cache chat %s: %s", cache_chat, exc)
            break
    return held


async def photo_results(context: BotContext, answer: ImageAnswer, offset: int) -> list[InlineQueryResult]:
    """The hits as inline results: cached photos, else (with a public engine URL) photos by URL."""
    held = await _file_ids(context, answer)
    public = services(context).settings.engine_public_url
    results: list[InlineQueryResult] = []
    for i, hit in enumerate(answer.images):
        result_id = f"{hit.id}-{offset + i}"[:64]
        caption = hit_caption(hit, 200, context.lang)
        if hit.id in held:
            results.append(InlineQueryResultCachedPhoto(result_id, held[hit.id], caption=caption))
        elif public:
            # Bounded in size: Telegram fetches inline photos itself and refuses JPEGs over 5 MB.
            results.append(InlineQueryResultPhoto(
                result_id, photo_url=f"{public}{image_path(hit.id)}?size=1024",
                thumbnail_url=f"{public}{image_path(hit.id)}?size=160", caption=caption,
            ))
    return results


def _page_key(context: BotContext, version: str, words: str, lang: str | None,
              offset: int) -> tuple[str, str, str | None, int, str]:
    """What an inline page is remembered by."""
    return (version, words.lower(), lang, offset, context.lang)


async def _search(context: BotContext, words: str, lang: str | None, offset: int) -> InlinePage:
    """One page of pictures for the query, remembered for the next identical query."""
    s = services(context)
    key = _page_key(context, (await s.engine.stats()).version, words, lang, offset)
    page = s.inline.page(key)
    if page is None:
        k = s.settings.inline_page
        answer = await s.engine.images(words, k=k, offset=offset, lang=lang)
        page = InlinePage(await photo_results(context, answer, offset),
                          str(offset + k) if len(answer.images) >= k else "")
        s.inline.keep(key, page)
    return page


async def _answer(iq: InlineQuery, page: InlinePage | None, personal: bool = False,
                  button: str | None = None) -> None:
    results = page.results if page is not None else []
    await iq.answer(results, next_offset=page.next_offset if page and not personal else "",
                    cache_time=0 if personal else 60, is_personal=True,
                    button=_button(button) if button else None)


async def _answer_empty(iq: InlineQuery, context: BotContext, offset: int) -> None:
    """The empty query: pictures of an example that answers, and the example to try."""
    s = services(context)
    examples = await s.examples.get(s.engine, context.lang)
    if examples is None:
        await _answer(iq, None, button=context.t("inline_open"))
        return
    page = await _search(context, examples.inline, None, offset)
    await _answer(iq, page, button=context.t("inline_try", q=examples.inline))


async def _superseded(context: BotContext, user: int, query_id: str) -> bool:
    """Wait for the next keystroke; whether one came (then this query is not searched)."""
    s = services(context)
    s.inline.typed(user, query_id)
    await asyncio.sleep(s.settings.inline_debounce_s)
    return not s.inline.is_latest(user, query_id)


async def _users_search(
    context: BotContext, user: int, words: str, lang: str | None, offset: int
) -> InlinePage:
    """The page for the query; a first page is recorded as what the user was shown (and wakes the
    queries waiting for a stand-in, even when the search fails)."""
    page: InlinePage | None = None
    try:
        page = await _search(context, words, lang, offset)
    finally:
        if not offset:
            await services(context).inline.searched(user, page)
    return page


async def answer_inline(update: Update, context: BotContext) -> None:
    """Answer an inline query: its own pictures, or a stand-in when a newer keystroke superseded it."""
    iq = update.inline_query
    assert iq is not None
    s = services(context)
    words, lang = split_lang(iq.query)
    # isdigit() alone accepts "²", which int() refuses: an offset is ASCII digits (the client echoes ours).
    offset = int(iq.offset) if iq.offset.isascii() and iq.offset.isdigit() else 0
    user = iq.from_user.id
    try:
        if not words:
            await _answer_empty(iq, context, offset)
            return
        if not offset and await _superseded(context, user, iq.id):
            await _answer(iq, await s.inline.stand_in(user, STAND_IN_WAIT_S), personal=True)
            return
        remembered = s.inline.page(_page_key(context, (await s.engine.stats()).version, words, lang, offset))
        if remembered is None and not s.limiter.allow(user):
            log.info("rate-limited inline search of user %d", user)
            await _answer(iq, s.inline.shown.get(user) if not offset else None, personal=True,
                          button=context.t("slow_down") if s.limiter.warn(user) else None)
            return
        page = await _users_search(context, user, words, lang, offset)
    except NoBundle:
        await _answer(iq, None, personal=True, button=context.t("no_model"))
        return
    except EngineUnavailable as exc:
        log.info("inline query got no answer from the engine: %s", type(exc).__name__)
        await _answer(iq, s.inline.shown.get(user), personal=True, button=context.t("busy"))
        return
    except EngineRequestError:  # e.g. only stop words: like finding nothing
        page = InlinePage([])
    if page.results or offset:
        await _answer(iq, page)
    else:  # nothing for these words: keep showing the last pictures, and say so
        await _answer(iq, s.inline.shown.get(user), personal=True, button=context.t("inline_none", q=words))
