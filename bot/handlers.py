"""The handlers of commands, messages and buttons: each reads its update and hands the work to
:mod:`bot.search_answers`, :mod:`bot.corpus_answers` or :mod:`bot.greeting` (inline queries are
:mod:`bot.inline`, the admin's /retrain :mod:`bot.admin`). Every text comes from :mod:`bot.messages` in
the user's language (``context.t``)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from telegram import InlineKeyboardMarkup, Update
from telegram.constants import ChatAction, ChatType
from telegram.ext import ApplicationHandlerStop

from bot import corpus_answers, search_answers
from bot.callbacks import IMAGES, LANGUAGE, MORE, RELATED, SIMILAR, as_button
from bot.callbacks import button as make_button
from bot.context import CHOSEN_LANGUAGE, BotContext
from bot.engine_client import EngineRequestError
from bot.greeting import help_text
from bot.menus import chat_menu
from bot.messages import EN, LANGUAGE_NAMES, LANGUAGES, language, text
from bot.sending import chat_action
from bot.services import services

log = logging.getLogger(__name__)

SLOW_DOWN = text(EN, "slow_down")
ES_EXAMPLE = "es"


# The first bytes of the formats the engine reads: a file's bytes, not the MIME type its sender claims,
# decide whether it is an image.
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*")


def looks_like_image(data: bytes) -> bool:
    """Whether ``data`` starts like a JPEG, PNG, GIF, BMP, TIFF or WebP file."""
    return data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


class TooBig(Exception):
    """A file over the bot's photo limit (its size in bytes is ``args[0]``)."""


async def _download(context: BotContext, file_id: str, claimed: int | None = None) -> bytes:
    """The bytes of a file the user sent, refused (:class:`TooBig`) before the download when the message
    or the Bot API says it is over the limit, and after it when neither said."""
    limit = int(services(context).settings.max_photo_mb * 1024 * 1024)
    if claimed is not None and claimed > limit:
        raise TooBig(claimed)
    file = await context.bot.get_file(file_id)
    if file.file_size is not None and file.file_size > limit:
        raise TooBig(file.file_size)
    data = bytes(await file.download_as_bytearray())
    if len(data) > limit:
        raise TooBig(len(data))
    return data


async def limit_users(update: Update, context: BotContext) -> None:
    """Stop a user's message or button tap when they exceed their request rate, with a friendly word the
    first time (a flood gets one reply, not one per message). Inline queries are counted by
    :mod:`bot.inline` itself, per search: it debounces keystrokes and answers every one."""
    user = update.effective_user
    limiter = services(context).limiter
    if user is None or update.inline_query is not None or limiter.allow(user.id):
        return
    if update.callback_query is not None:
        # A button tap must be answered (the client shows a spinner until then); the text only once.
        await update.callback_query.answer(context.t("slow_down") if limiter.warn(user.id) else None)
    elif limiter.warn(user.id):
        log.info("rate-limited user %d", user.id)
        if update.effective_message is not None:
            await update.effective_message.reply_text(context.t("slow_down"))
    raise ApplicationHandlerStop


async def start(update: Update, context: BotContext) -> None:
    """/start and /help: greet and explain what the bot knows and how to ask."""
    assert update.effective_message is not None
    await update.effective_message.reply_text(await help_text(context))


async def images_cmd(update: Update, context: BotContext) -> None:
    """/images <words> [lang:xx]: an album of the nearest images."""
    assert update.effective_chat is not None
    await search_answers.answer_images(context, update.effective_chat.id, " ".join(context.args or []))


async def related_cmd(update: Update, context: BotContext) -> None:
    """/related <words>: the nearest words."""
    assert update.effective_chat is not None
    await search_answers.answer_related(context, update.effective_chat.id, " ".join(context.args or []))


# Commands people guess for what a photo alone does (hashtags): answered with how to get them.
PHOTO_GUESSES = frozenset({"hashtags", "hashtag", "tags", "tag", "photo", "foto"})


async def unknown_cmd(update: Update, context: BotContext) -> None:
    """A command the bot does not have (a typo, a guess): say so and point at /help, instead of silence."""
    message = update.effective_message
    assert message is not None
    command = (message.text or "/").split()[0]
    name = command[1:].split("@")[0].lower()
    if name in PHOTO_GUESSES:
        await message.reply_text(context.t("photo_command"))
    else:
        await message.reply_text(context.t("unknown_command", command=command[:40]))


async def text_msg(update: Update, context: BotContext) -> None:
    """Plain text: an image search, with a hint about the commands (once per user)."""
    assert update.effective_chat is not None and update.effective_message is not None
    await search_answers.answer_images(context, update.effective_chat.id, update.effective_message.text or "")
    if context.user_data is not None and not context.user_data.get("hinted"):
        context.user_data["hinted"] = True
        await update.effective_message.reply_text(context.t("tip"))


async def photo_msg(update: Update, context: BotContext) -> None:
    """A photo (or image document): its hashtags and a button for similar images."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    s = services(context)
    await chat_action(context, update.effective_chat.id, ChatAction.TYPING)
    if message.photo:
        file_id, claimed = message.photo[-1].file_id, message.photo[-1].file_size
    else:
        assert message.document is not None
        file_id, claimed = message.document.file_id, message.document.file_size
    try:
        data = await _download(context, file_id, claimed)
    except TooBig as big:
        await message.reply_text(context.t("photo_too_big", size=context.num(int(big.args[0]) / 2**20, 1),
                                           limit=context.num(s.settings.max_photo_mb)))
        return
    if not looks_like_image(data):
        await message.reply_text(context.t("not_an_image"))
        return
    try:
        tags = await s.engine.hashtags(data, k=s.settings.hashtags_k, lang=context.lang)
    except EngineRequestError as exc:
        await message.reply_text(context.t("cant_read_image", why=exc))
        return
    if not tags:
        await message.reply_text(context.t("no_tags"))
        return
    reply, markup = search_answers.hashtags_reply(context, tags, file_id)
    await message.reply_text(reply, reply_markup=markup)


async def button(update: Update, context: BotContext) -> None:
    """Inline buttons: more images, related words, images of a query, similar images."""
    query = update.callback_query
    assert query is not None
    pressed = as_button(query.data)
    chat = update.effective_chat
    if pressed is None or chat is None:
        await expired_button(update, context)
        return
    await query.answer()
    if pressed.kind == MORE:
        await search_answers.answer_images(context, chat.id, pressed.value, offset=pressed.offset)
    elif pressed.kind == RELATED:
        await search_answers.answer_related(context, chat.id, pressed.value)
    elif pressed.kind == IMAGES:
        await search_answers.answer_images(context, chat.id, pressed.value)
    elif pressed.kind == SIMILAR:
        await search_answers.answer_similar(context, chat.id, await _download(context, pressed.value))
    elif pressed.kind == LANGUAGE:
        await set_language(update, context, pressed.value)


AUTO = "auto"  # /language auto: follow the Telegram app's language again


async def language_cmd(update: Update, context: BotContext) -> None:
    """/language [en|es|ca|auto]: choose the language the bot answers this user in (buttons without one)."""
    message = update.effective_message
    assert message is not None
    if context.args:
        await set_language(update, context, context.args[0].lower())
        return
    chosen = (context.user_data or {}).get(CHOSEN_LANGUAGE)
    current = LANGUAGE_NAMES[chosen] if chosen in LANGUAGES else context.t("language_auto")
    rows = [[make_button(LANGUAGE_NAMES[code], LANGUAGE, code) for code in LANGUAGES],
            [make_button(context.t("language_auto"), LANGUAGE, AUTO)]]
    await message.reply_text(context.t("language_pick", current=current),
                             reply_markup=InlineKeyboardMarkup(rows))


async def set_language(update: Update, context: BotContext, code: str) -> None:
    """Make ``code`` (a language, or ``auto``) the user's language, kept in their user data (persisted),
    answer in it, and put the private chat's command menu in it."""
    user, chat = update.effective_user, update.effective_chat
    assert user is not None and chat is not None
    if code not in (*LANGUAGES, AUTO) or context.user_data is None:
        await context.bot.send_message(chat.id, context.t("language_unknown", example=ES_EXAMPLE))
        return
    if code == AUTO:
        context.user_data.pop(CHOSEN_LANGUAGE, None)
        context.lang = language(user.language_code)
    else:
        context.user_data[CHOSEN_LANGUAGE] = code
        context.lang = code
    await context.bot.send_message(chat.id, context.t("language_auto_set" if code == AUTO else
                                                      "language_set"))
    if chat.type == ChatType.PRIVATE:
        await chat_menu(context.bot, chat.id, None if code == AUTO else code, context.is_admin)


async def expired_button(update: Update, context: BotContext) -> None:
    """A button whose data the bot no longer holds (PTB's ``InvalidCallbackData``)."""
    assert update.callback_query is not None
    await update.callback_query.answer(context.t("expired"))


def _in_chat(
    answer: Callable[[BotContext, int], Awaitable[None]],
) -> Callable[[Update, BotContext], Coroutine[Any, Any, None]]:
    """A command handler that sends ``answer`` to the chat the command came from."""

    async def handler(update: Update, context: BotContext) -> None:
        assert update.effective_chat is not None
        await answer(context, update.effective_chat.id)

    handler.__doc__ = answer.__doc__
    return handler


stats_cmd = _in_chat(corpus_answers.answer_stats)  # /stats
map_cmd = _in_chat(corpus_answers.answer_map)  # /map
languages_cmd = _in_chat(corpus_answers.answer_languages)  # /languages
attractions_cmd = _in_chat(corpus_answers.answer_attractions)  # /attractions


async def words_cmd(update: Update, context: BotContext) -> None:
    """/words: the word map."""
    assert update.effective_chat is not None
    chat_id = update.effective_chat.id
    await corpus_answers.send_report(context, chat_id, "word_map.png", context.t("words_caption"))


async def top_cmd(update: Update, context: BotContext) -> None:
    """/top [language]: the most frequent words, text and plot."""
    assert update.effective_chat is not None
    language = context.args[0] if context.args else None
    await corpus_answers.answer_top(context, update.effective_chat.id, language)
