"""The handlers of commands, messages, buttons and inline queries: each reads its update and hands the
work to :mod:`bot.search_answers` or :mod:`bot.corpus_answers` (the admin's /retrain is in
:mod:`bot.admin`)."""

from __future__ import annotations

import contextlib
import logging

from telegram import Update
from telegram.constants import ChatAction
from telegram.ext import ApplicationHandlerStop, ContextTypes

from bot import corpus_answers, search_answers
from bot.callbacks import IMAGES, MORE, RELATED, SIMILAR, parse_callback_data
from bot.engine_client import EngineRequestError, EngineUnavailable
from bot.sending import chat_action
from bot.services import services

log = logging.getLogger(__name__)

SLOW_DOWN = "You are sending requests a bit fast — please wait a few seconds."


async def _download(context: ContextTypes.DEFAULT_TYPE, file_id: str) -> bytes:
    """The bytes of a file the user sent."""
    return bytes(await (await context.bot.get_file(file_id)).download_as_bytearray())


async def limit_users(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Stop a user's update (with a friendly word) when they exceed their request rate."""
    user = update.effective_user
    if user is None or services(context).limiter.allow(user.id):
        return
    log.info("rate-limited user %d", user.id)
    if update.callback_query is not None:
        await update.callback_query.answer(SLOW_DOWN)
    elif update.effective_message is not None:
        await update.effective_message.reply_text(SLOW_DOWN)
    raise ApplicationHandlerStop


async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Greet and explain what the bot knows and how to ask."""
    assert update.effective_message is not None
    about = ""
    with contextlib.suppress(EngineUnavailable, EngineRequestError):
        about = corpus_answers.about_text(await services(context).engine.stats())
    text = (
        "Hi! I place words and pictures of a topic in one space.\n" + about + "Ask me:\n"
        "• /images healthy restaurant — pictures for words (use -word to subtract: /images beer -estrella)\n"
        "• /related sants — words near words\n"
        "• send a photo — its hashtags, and similar pictures\n"
        "• /stats, /languages, /top [language], /map, /words — what the corpus looks like\n"
        f"• inline: type @{context.bot.username} cerveza in any chat\n"
        "Plain text works as an image search too."
    )
    await update.effective_message.reply_text(text)


async def images_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/images <words>: an album of the nearest images."""
    assert update.effective_chat is not None
    await search_answers.answer_images(context, update.effective_chat.id, " ".join(context.args or []))


async def related_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/related <words>: the nearest words."""
    assert update.effective_chat is not None
    await search_answers.answer_related(context, update.effective_chat.id, " ".join(context.args or []))


async def text_msg(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text: an image search, with a hint about the commands."""
    assert update.effective_chat is not None and update.effective_message is not None
    text = update.effective_message.text or ""
    await search_answers.answer_images(context, update.effective_chat.id, text)
    if not context.user_data or not context.user_data.get("hinted"):
        if context.user_data is not None:
            context.user_data["hinted"] = True
        await update.effective_message.reply_text("Tip: /related <word> finds words; /help lists everything.")


async def photo_msg(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo (or image document): its hashtags and a button for similar images."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    s = services(context)
    await chat_action(context, update.effective_chat.id, ChatAction.TYPING)
    if message.photo:
        file_id = message.photo[-1].file_id
    else:
        assert message.document is not None
        file_id = message.document.file_id
    data = await _download(context, file_id)
    try:
        tags = await s.engine.hashtags(data, k=s.settings.hashtags_k)
    except EngineRequestError as exc:
        await message.reply_text(f"I can't read that image: {exc}")
        return
    if not tags:
        await message.reply_text("I found no words for that picture.")
        return
    text, markup = search_answers.hashtags_reply(tags, file_id, s.keys)
    await message.reply_text(text, reply_markup=markup)


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Inline buttons: more images, related words, images of a word, similar images."""
    query = update.callback_query
    assert query is not None and query.data is not None
    kind, extra, value = parse_callback_data(query.data, services(context).keys)
    chat = update.effective_chat
    if value is None or chat is None:
        await query.answer("That button has expired; please ask again.")
        return
    await query.answer()
    if kind == MORE:
        await search_answers.answer_images(context, chat.id, value, offset=int(extra or 0))
    elif kind == RELATED:
        await search_answers.answer_related(context, chat.id, value)
    elif kind == IMAGES:
        await search_answers.answer_images(context, chat.id, value)
    elif kind == SIMILAR:
        await search_answers.answer_similar(context, chat.id, await _download(context, value))


async def inline_query(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Inline mode: photo results for the query, paged with next_offset."""
    iq = update.inline_query
    assert iq is not None
    s = services(context)
    if not iq.query.strip():
        await iq.answer([], cache_time=5)
        return
    offset = int(iq.offset) if iq.offset.isdigit() else 0
    k = s.settings.inline_page
    try:
        answer = await s.engine.images(iq.query, k=k, offset=offset)
    except (EngineRequestError, EngineUnavailable) as exc:
        log.info("inline query got no answer: %s", type(exc).__name__)
        await iq.answer([], cache_time=5)
        return
    results = search_answers.inline_results(answer, offset, s.settings.engine_public_url)
    next_offset = str(offset + k) if len(answer.images) >= k else ""
    await iq.answer(results, next_offset=next_offset, cache_time=60)


async def stats_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/stats: corpus size, filter report and language shares (with the languages plot)."""
    assert update.effective_chat is not None
    await corpus_answers.answer_stats(context, update.effective_chat.id)


async def map_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/map: the t-SNE mosaic of the images (as a photo, and the biggest one as a document)."""
    assert update.effective_chat is not None
    await corpus_answers.answer_map(context, update.effective_chat.id)


async def words_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/words: the word map."""
    assert update.effective_chat is not None
    chat_id = update.effective_chat.id
    await corpus_answers.send_report(context, chat_id, "word_map.png", "The words laid out by t-SNE")


async def top_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/top [language]: the most frequent words, text and plot."""
    assert update.effective_chat is not None
    language = context.args[0] if context.args else None
    await corpus_answers.answer_top(context, update.effective_chat.id, language)


async def languages_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/languages: language shares, text and plot."""
    assert update.effective_chat is not None
    await corpus_answers.answer_languages(context, update.effective_chat.id)
