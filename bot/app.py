"""The PTB application: handlers turning chats, photos and inline queries into engine calls."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import re
import textwrap
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import quote

from telegram import (
    BotCommand,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    InlineQueryResultPhoto,
    InputMediaPhoto,
    Message,
    Update,
)
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.engine_client import (
    EngineClient,
    EngineRequestError,
    EngineUnavailable,
    ImageHit,
    ReportMissing,
)
from bot.retrain import ArqRetrainManager, RetrainError, RetrainManager, make_retrain_manager
from bot.services import FileIdCache, ShortKeys, UserRateLimiter
from bot.settings import BotSettings

log = logging.getLogger(__name__)

BUSY = "The service is busy, try again shortly."
SLOW_DOWN = "You are sending requests a bit fast — please wait a few seconds."
OOPS = "Sorry, something went wrong. Please try again."
MAX_CALLBACK = 64
SERVICES = "services"

COMMANDS: list[tuple[str, str]] = [
    ("images", "images for words: /images healthy restaurant, /images beer -estrella"),
    ("related", "words near words: /related sants"),
    ("stats", "what the corpus holds"),
    ("map", "the t-SNE map of the images"),
    ("words", "the map of the words"),
    ("top", "top words (optionally for one language): /top es"),
    ("languages", "the corpus's languages"),
    ("help", "how to ask"),
]


@dataclass
class Services:
    """What the handlers share, opened in post_init and closed in post_shutdown."""

    settings: BotSettings
    engine: EngineClient
    file_ids: FileIdCache
    limiter: UserRateLimiter
    keys: ShortKeys
    retrain: RetrainManager | ArqRetrainManager


def services(context: ContextTypes.DEFAULT_TYPE) -> Services:
    """The shared services of this application."""
    return cast(Services, context.application.bot_data[SERVICES])


# ---- formatting helpers ----------------------------------------------------------------------------


def shorten(text: str, width: int = 90) -> str:
    """A caption cut to ``width`` characters on a word boundary."""
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder="…")


def callback(kind: str, value: str, keys: ShortKeys, extra: str = "") -> str:
    """Callback data ``kind|extra|value``, with a short key instead of the value when over 64 bytes."""
    data = f"{kind}|{extra}|{value}"
    if len(data.encode()) <= MAX_CALLBACK:
        return data
    return f"{kind.upper()}|{extra}|{keys.put(value)}"


def parse_callback(data: str, keys: ShortKeys) -> tuple[str, str, str | None]:
    """Split callback data into (kind, extra, value); value is None when its short key was forgotten."""
    kind, _, rest = data.partition("|")
    extra, _, value = rest.partition("|")
    if kind.isupper():
        return kind.lower(), extra, keys.get(value)
    return kind, extra, value


def _word_counts(items: Any) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and "word" in item:
            out.append((str(item["word"]), float(item.get("count", item.get("score", 0)) or 0)))
        elif isinstance(item, list | tuple) and item:
            out.append((str(item[0]), float(item[1]) if len(item) > 1 else 0.0))
        elif isinstance(item, str):
            out.append((item, 0.0))
    return out


def stats_words(stats: dict[str, Any], language: str | None = None) -> list[tuple[str, float]]:
    """The top words (word, count), overall or for one language, from the engine's stats."""
    report: dict[str, Any] = stats["report"] if isinstance(stats.get("report"), dict) else {}
    if language:
        by_lang = stats.get("top_words_by_language") or report.get("top_words_by_language") or {}
        if not by_lang and isinstance(stats.get("top_words"), dict):
            by_lang = stats["top_words"]
        return _word_counts(by_lang.get(language) if isinstance(by_lang, dict) else None)
    top: Any = stats.get("top_words") or report.get("top_words") or []
    if isinstance(top, dict):  # only per-language lists: take the first
        top = next(iter(top.values()), [])
    return _word_counts(top)


def stats_languages(stats: dict[str, Any]) -> dict[str, int]:
    """Language code → kept posts, from the stats or their filter report."""
    report = stats.get("filter_report") or {}
    langs = stats.get("languages") or (report.get("languages") if isinstance(report, dict) else None) or {}
    if isinstance(langs, list):  # [{"lang"/"code", "count"}] shapes
        langs = {str(x.get("lang") or x.get("code")): x.get("count", 0) for x in langs if isinstance(x, dict)}
    out: dict[str, int] = {}
    for code, value in langs.items() if isinstance(langs, dict) else []:
        if isinstance(value, dict):  # {"posts", "share"} as in the report's stats.json
            value = value.get("posts", value.get("count"))
        if isinstance(value, int | float):
            out[str(code)] = int(value)
    return out


def mosaic_names(stats: dict[str, Any]) -> tuple[str | None, str | None]:
    """The t-SNE mosaics to send: (photo, document), from the report's files (names carry the size)."""
    files = stats.get("report_files")
    if not isinstance(files, list):  # an engine without the list: try the usual names
        return "tsne_mosaic_2048.png", "tsne_mosaic_4096.png"
    sizes = sorted(int(m.group(1)) for f in files if (m := re.fullmatch(r"tsne_mosaic_(\d+)\.png", str(f))))
    if not sizes:
        return None, None
    # Telegram shrinks photos to 2560 px; anything bigger goes as a document, at full resolution.
    photo = max((n for n in sizes if n <= 2560), default=sizes[0])
    document = sizes[-1] if sizes[-1] > photo else None
    return f"tsne_mosaic_{photo}.png", f"tsne_mosaic_{document}.png" if document else None


def corpus_size(stats: dict[str, Any]) -> tuple[int | None, int | None]:
    """(kept, total) posts."""
    report = stats.get("filter_report") or {}
    corpus = stats.get("corpus") or {}
    kept = report.get("kept") if isinstance(report, dict) else None
    total = report.get("total") if isinstance(report, dict) else None
    if kept is None and isinstance(corpus, dict):
        kept = corpus.get("kept") or corpus.get("posts") or corpus.get("images")
        total = total or corpus.get("total")
    return (int(kept) if kept is not None else None, int(total) if total is not None else None)


def language_shares(stats: dict[str, Any]) -> str:
    """The language shares as text, like "en 62% · es 25% · ca 13%"."""
    langs = stats_languages(stats)
    total = sum(langs.values())
    if not total:
        return "unknown"
    ranked = sorted(langs.items(), key=lambda kv: -kv[1])
    return " · ".join(f"{code} {100 * n / total:.0f}%" for code, n in ranked[:8])


def suggest(words: Sequence[str], stats: dict[str, Any]) -> list[str]:
    """Known words that look like the unknown ones (from the stats' top words)."""
    vocab = [w for w, _ in stats_words(stats)]
    out: list[str] = []
    for word in words:
        out += [m for m in difflib.get_close_matches(word, vocab, n=2, cutoff=0.6) if m not in out]
    return out[:4]


def word_buttons(words: Sequence[str], keys: ShortKeys) -> InlineKeyboardMarkup:
    """Follow-up buttons: related words and images for each word."""
    rows = [
        [
            InlineKeyboardButton(f"🔎 {w}", callback_data=callback("r", w, keys)),
            InlineKeyboardButton(f"🖼 {w}", callback_data=callback("i", w, keys)),
        ]
        for w in words[:5]
    ]
    return InlineKeyboardMarkup(rows)


# ---- the answers (shared by commands, buttons and plain text) ---------------------------------------


async def _action(context: ContextTypes.DEFAULT_TYPE, chat_id: int, action: str) -> None:
    # A chat action is a courtesy: never let it fail an answer.
    with contextlib.suppress(TelegramError):
        await context.bot.send_chat_action(chat_id, action)


async def _unknown_note(unknown: Sequence[str], known_query: str, context: ContextTypes.DEFAULT_TYPE) -> str:
    """Name the unknown words and suggest known ones (near the query's known part, or look-alikes)."""
    s = services(context)
    hints: list[str] = []
    if known_query.strip():
        with contextlib.suppress(EngineRequestError, EngineUnavailable):
            hints = [w.word for w in (await s.engine.related(known_query, k=4)).words]
    if not hints:
        with contextlib.suppress(EngineRequestError, EngineUnavailable):
            hints = suggest(unknown, await s.engine.stats())
    note = f"I don't know: {', '.join(unknown)}."
    return note + (f" Try: {', '.join(hints)}." if hints else "")


def _known_part(query: str, unknown: Sequence[str]) -> str:
    bad = {u.lower() for u in unknown}
    return " ".join(t for t in query.split() if t.lstrip("-").lower() not in bad and not t.startswith("-"))


async def send_album(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, hits: Sequence[ImageHit], version: str = ""
) -> None:
    """Send hits as one album (or one photo), uploading bytes only for images Telegram has not seen."""
    s = services(context)
    # Keys carry the bundle version: an id may name another picture in the next bundle.
    version = version or str((await s.engine.stats()).get("version", ""))
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
    pairs = [
        (m, f"{h.score:.2f} · {shorten(h.caption)}")
        for h, m in zip(hits, media, strict=True)
        if m is not None
    ]
    if not pairs:
        await context.bot.send_message(chat_id, "Those pictures are not available right now.")
        return []
    if len(pairs) == 1:
        return [await context.bot.send_photo(chat_id, pairs[0][0], caption=pairs[0][1])]
    return await context.bot.send_media_group(chat_id, [InputMediaPhoto(m, caption=c) for m, c in pairs[:10]])


async def answer_images(
    context: ContextTypes.DEFAULT_TYPE, chat_id: int, query: str, offset: int = 0
) -> None:
    """Search images for a query and send them as an album with a "more" button."""
    s = services(context)
    query = query.strip()
    if not query:
        await context.bot.send_message(chat_id, "Tell me what to look for, e.g. /images healthy restaurant")
        return
    await _action(context, chat_id, ChatAction.UPLOAD_PHOTO)
    k = s.settings.album_size
    try:
        answer = await s.engine.images(query, k=k, offset=offset)
    except EngineRequestError as exc:
        if exc.code == "unknown_words":
            unknown = exc.unknown or query.split()
            await context.bot.send_message(chat_id, await _unknown_note(unknown, "", context))
        else:
            await context.bot.send_message(chat_id, f"I can't search that: {exc}")
        return
    notes: list[str] = []
    if answer.unknown:
        notes.append(await _unknown_note(answer.unknown, _known_part(query, answer.unknown), context))
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
        markup = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(
                        "More ▶", callback_data=callback("m", query, s.keys, extra=str(offset + k))
                    )
                ]
            ]
        )
    await context.bot.send_message(chat_id, text, reply_markup=markup)


async def answer_related(context: ContextTypes.DEFAULT_TYPE, chat_id: int, query: str) -> None:
    """Send the nearest words of a query, with follow-up buttons."""
    s = services(context)
    query = query.strip()
    if not query:
        await context.bot.send_message(chat_id, "Tell me a word, e.g. /related sants")
        return
    await _action(context, chat_id, ChatAction.TYPING)
    try:
        answer = await s.engine.related(query, k=s.settings.related_k)
    except EngineRequestError as exc:
        if exc.code == "unknown_words":
            await context.bot.send_message(
                chat_id, await _unknown_note(exc.unknown or query.split(), "", context)
            )
        else:
            await context.bot.send_message(chat_id, f"I can't relate that: {exc}")
        return
    lines = [f"Words near «{query}»:"]
    lines += [f"{w.word}  {w.score:.2f}" for w in answer.words]
    if answer.unknown:
        lines.append(await _unknown_note(answer.unknown, _known_part(query, answer.unknown), context))
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
    await _action(context, chat_id, ChatAction.UPLOAD_PHOTO)
    try:
        answer = await s.engine.similar(image, k=s.settings.album_size)
    except EngineRequestError as exc:
        await context.bot.send_message(chat_id, f"I can't read that image: {exc}")
        return
    if not answer.images:
        await context.bot.send_message(chat_id, "No similar images found.")
        return
    await send_album(context, chat_id, answer.images, answer.version)


# ---- handlers --------------------------------------------------------------------------------------


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
    s = services(context)
    about = ""
    with contextlib.suppress(EngineUnavailable, EngineRequestError):
        stats = await s.engine.stats()
        kept, _ = corpus_size(stats)
        corpus = stats.get("corpus")
        topic = stats.get("topic") or (corpus.get("name") if isinstance(corpus, dict) else None)
        about = (
            f"I know {kept if kept is not None else 'some'} posts"
            f"{f' about {topic}' if topic else ''} (languages: {language_shares(stats)}; "
            f"model {stats.get('version', '?')}).\n\n"
        )
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
    await answer_images(context, update.effective_chat.id, " ".join(context.args or []))


async def related_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/related <words>: the nearest words."""
    assert update.effective_chat is not None
    await answer_related(context, update.effective_chat.id, " ".join(context.args or []))


async def text_msg(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Plain text: an image search, with a hint about the commands."""
    assert update.effective_chat is not None and update.effective_message is not None
    text = update.effective_message.text or ""
    await answer_images(context, update.effective_chat.id, text)
    if not context.user_data or not context.user_data.get("hinted"):
        if context.user_data is not None:
            context.user_data["hinted"] = True
        await update.effective_message.reply_text("Tip: /related <word> finds words; /help lists everything.")


async def photo_msg(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """A photo (or image document): its hashtags and a button for similar images."""
    message = update.effective_message
    assert message is not None and update.effective_chat is not None
    s = services(context)
    await _action(context, update.effective_chat.id, ChatAction.TYPING)
    if message.photo:
        file_id = message.photo[-1].file_id
    else:
        assert message.document is not None
        file_id = message.document.file_id
    data = bytes(await (await context.bot.get_file(file_id)).download_as_bytearray())
    try:
        tags = await s.engine.hashtags(data, k=s.settings.hashtags_k)
    except EngineRequestError as exc:
        await message.reply_text(f"I can't read that image: {exc}")
        return
    if not tags:
        await message.reply_text("I found no words for that picture.")
        return
    text = " ".join(f"#{t.word}" for t in tags) + "\n" + ", ".join(f"{t.word} {t.score:.2f}" for t in tags)
    markup = InlineKeyboardMarkup(
        [[InlineKeyboardButton("Similar images", callback_data=callback("s", file_id, s.keys))]]
    )
    await message.reply_text(text, reply_markup=markup)


async def button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Inline buttons: more images, related words, images of a word, similar images."""
    query = update.callback_query
    assert query is not None and query.data is not None
    s = services(context)
    kind, extra, value = parse_callback(query.data, s.keys)
    chat = update.effective_chat
    if value is None or chat is None:
        await query.answer("That button has expired; please ask again.")
        return
    await query.answer()
    if kind == "m":
        await answer_images(context, chat.id, value, offset=int(extra or 0))
    elif kind == "r":
        await answer_related(context, chat.id, value)
    elif kind == "i":
        await answer_images(context, chat.id, value)
    elif kind == "s":
        data = bytes(await (await context.bot.get_file(value)).download_as_bytearray())
        await answer_similar(context, chat.id, data)


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
    base = s.settings.engine_public_url
    results = [
        InlineQueryResultPhoto(
            id=f"{h.id}-{offset + i}"[:64],
            # Bounded in size: Telegram fetches inline photos itself and refuses JPEGs over 5 MB.
            photo_url=f"{base}/v1/images/{quote(h.id)}?size=1024",
            thumbnail_url=f"{base}/v1/images/{quote(h.id)}?size=160",
            caption=f"{h.score:.2f} · {shorten(h.caption, 200)}",
        )
        for i, h in enumerate(answer.images)
    ]
    next_offset = str(offset + k) if len(answer.images) >= k else ""
    await iq.answer(results, next_offset=next_offset, cache_time=60)


async def stats_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/stats: corpus size, filter report and language shares (with the languages plot)."""
    chat = update.effective_chat
    assert chat is not None
    stats = await services(context).engine.stats(fresh=True)
    kept, total = corpus_size(stats)
    lines = [
        f"Model version: {stats.get('version', '?')}",
        f"Posts kept: {kept if kept is not None else '?'} of {total if total is not None else '?'}",
    ]
    report = stats.get("filter_report") or {}
    dropped = report.get("dropped") if isinstance(report, dict) else None
    if isinstance(dropped, dict):
        reasons = [f"{k.replace('_', ' ')} {v}" for k, v in dropped.items() if v]
        lines.append("Dropped: " + (", ".join(reasons) if reasons else "none"))
    if stats.get("n_images") is not None:
        lines.append(f"Images: {stats['n_images']}, words in the space: {stats.get('n_words', '?')}")
    lines.append(f"Languages: {language_shares(stats)}")
    metrics = stats.get("metrics") or {}
    search = metrics.get("image_search") if isinstance(metrics, dict) else None
    if isinstance(search, dict):
        lines.append(
            "Image search: "
            + ", ".join(f"{k} {v:.3g}" for k, v in search.items() if isinstance(v, int | float))
        )
    await context.bot.send_message(chat.id, "\n".join(lines))
    await send_report(context, chat.id, "languages.png", "Languages of the kept posts", quiet=True)


async def send_report(
    context: ContextTypes.DEFAULT_TYPE,
    chat_id: int,
    name: str,
    caption: str,
    as_document: bool = False,
    quiet: bool = False,
) -> bool:
    """Send a picture from the bundle's report; say so (unless quiet) when it has none yet."""
    s = services(context)
    try:
        data = await s.engine.report_file(name)
    except ReportMissing:
        if not quiet:
            await context.bot.send_message(chat_id, f"The report has no {name} picture yet.")
        return False
    await _action(context, chat_id, ChatAction.UPLOAD_DOCUMENT if as_document else ChatAction.UPLOAD_PHOTO)
    if as_document:
        await context.bot.send_document(chat_id, data, filename=name, caption=caption)
    else:
        await context.bot.send_photo(chat_id, data, caption=caption)
    return True


async def map_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/map: the t-SNE mosaic of the images (as a photo, and the biggest one as a document)."""
    assert update.effective_chat is not None
    cid = update.effective_chat.id
    photo, document = mosaic_names(await services(context).engine.stats())
    if photo is None:
        await context.bot.send_message(cid, "The report has no t-SNE map picture yet.")
        return
    await send_report(context, cid, photo, "The images laid out by t-SNE")
    if document:
        await send_report(context, cid, document, "Full resolution", as_document=True, quiet=True)


async def words_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/words: the word map."""
    assert update.effective_chat is not None
    await send_report(context, update.effective_chat.id, "word_map.png", "The words laid out by t-SNE")


async def top_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/top [language]: the most frequent words, text and plot."""
    assert update.effective_chat is not None
    cid = update.effective_chat.id
    lang = context.args[0] if context.args else None
    stats = await services(context).engine.stats()
    words = stats_words(stats, lang)
    title = f"Top words ({lang})" if lang else "Top words"
    if words:
        body = "\n".join(f"{i}. {w}" + (f"  {c:g}" if c else "") for i, (w, c) in enumerate(words[:20], 1))
        await context.bot.send_message(cid, f"{title}:\n{body}")
    else:
        known = ", ".join(sorted(stats_languages(stats))) or "none yet"
        await context.bot.send_message(
            cid, f"No top words{f' for {lang}' if lang else ''} in the report yet (languages: {known})."
        )
    name = f"top_words_{lang}.png" if lang else "top_words.png"
    await send_report(context, cid, name, title, quiet=bool(words))


async def languages_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/languages: language shares, text and plot."""
    assert update.effective_chat is not None
    cid = update.effective_chat.id
    stats = await services(context).engine.stats()
    await context.bot.send_message(cid, f"Languages of the kept posts: {language_shares(stats)}")
    await send_report(context, cid, "languages.png", "Languages", quiet=True)


async def retrain_cmd(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """/retrain [status|cancel|versions|rollback [VERSION]]: admins only."""
    user, message = update.effective_user, update.effective_message
    assert user is not None and message is not None
    s = services(context)
    if user.id not in s.settings.admin_ids:
        log.warning("refused /retrain from user %d", user.id)
        await message.reply_text("Sorry, only the bot's admins can retrain the model.")
        return
    action = (context.args or ["start"])[0].lower()
    if action in ("versions", "rollback"):
        try:
            text = await (_rollback(s, context.args[1:] if context.args else []) if action == "rollback"
                          else _versions_text(s))
        except EngineRequestError as exc:
            text = f"The engine refused: {exc}"
        await message.reply_text(text)
        return
    if action == "status":
        await message.reply_text((await s.retrain.status()).describe())
        return
    if action == "cancel":
        done = await s.retrain.cancel()
        await message.reply_text("Retraining cancelled." if done else "No retraining is running.")
        return
    try:
        status = await s.retrain.start()
    except RetrainError as exc:
        await message.reply_text(f"Can't retrain: {exc}.")
        return
    progress = await message.reply_text(status.describe())
    context.application.create_task(_follow_retrain(context, progress), update=update)


def _summary_line(entry: dict[str, Any] | None) -> str:
    """One bundle's filter and retrieval figures, for comparing versions."""
    if not entry:
        return "—"
    parts = [f"kept {entry.get('kept')} of {entry.get('total')} posts"]
    search = (entry.get("metrics") or {}).get("image_search") or {}
    if search:
        recalls = "/".join(f"{search.get(k, 0):.1f}" for k in ("r1", "r5", "r10"))
        parts.append(f"image search R@1/5/10 {recalls}")
    return ", ".join(parts)


async def _versions_text(s: Services, limit: int = 10) -> str:
    """The published bundles, newest first, marking the served one."""
    listing = await s.engine.versions()
    lines = ["Published bundles (newest first):"]
    for entry in listing.get("versions", [])[:limit]:
        mark = " ← serving" if entry.get("version") == listing.get("served") else ""
        lines.append(f"• {entry.get('version')}: {_summary_line(entry)}{mark}")
    lines.append("Roll back with /retrain rollback [VERSION] (default: the one before).")
    return "\n".join(lines)


async def _rollback(s: Services, args: list[str]) -> str:
    """Activate ``args[0]`` or the bundle published before the served one."""
    listing = await s.engine.versions()
    names = [str(v.get("version")) for v in listing.get("versions", [])]
    served = listing.get("served")
    if args:
        target = args[0]
        if target not in names:
            return f"No bundle named {target}. See /retrain versions."
    elif served in names and names.index(served) + 1 < len(names):
        target = names[names.index(served) + 1]
    else:
        return "There is no older bundle to roll back to."
    done = await s.engine.activate(target)
    return f"Rolled back: the engine now serves {done.get('version')} (was {done.get('previous')})."


async def _follow_retrain(
    context: ContextTypes.DEFAULT_TYPE, progress: Message, every_s: float = 2.0
) -> None:
    """Edit one message with the job's progress until it ends; then reload the engine."""
    s = services(context)
    shown = progress.text or ""
    old_version: str | None = None
    with contextlib.suppress(EngineUnavailable, EngineRequestError):
        old_version = (await s.engine.stats(fresh=True)).get("version")
    waiter = asyncio.ensure_future(s.retrain.wait())
    while True:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiter), every_s)
        status = waiter.result() if waiter.done() else await s.retrain.status()
        text = status.describe()
        if status.state == "done":
            try:
                await s.engine.reload()
                version = (await s.engine.stats(fresh=True)).get("version", status.version)
                text = f"Retraining done. The engine now serves version {version}."
                text += await _comparison(s, version, old_version)
            except (EngineUnavailable, EngineRequestError) as exc:
                text = f"Retraining done (version {status.version}), but the engine did not reload: {exc}"
        if text != shown:
            with contextlib.suppress(TelegramError):
                await progress.edit_text(text)
            shown = text
        if waiter.done():
            return


async def _comparison(s: Services, new: str | None, old: str | None) -> str:
    """The new bundle's figures beside the old one's ('' when the engine can't list bundles)."""
    try:
        listing = {v.get("version"): v for v in (await s.engine.versions()).get("versions", [])}
    except (EngineUnavailable, EngineRequestError):
        return ""
    text = f"\nnew: {_summary_line(listing.get(new))}"
    if old and old != new:
        text += f"\nold ({old}): {_summary_line(listing.get(old))}"
    return text


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Log the error with its traceback and answer the user briefly."""
    err = context.error
    busy = isinstance(err, EngineUnavailable)
    if busy:
        log.warning("engine unavailable: %s", err)
    else:
        log.error("error while handling an update", exc_info=err)
    if not isinstance(update, Update):
        return
    text = BUSY if busy else OOPS
    with contextlib.suppress(TelegramError):
        if update.callback_query is not None:
            await update.callback_query.answer(text)
        if update.effective_chat is not None:
            await context.bot.send_message(update.effective_chat.id, text)
        elif update.inline_query is not None:
            await update.inline_query.answer([], cache_time=5)


# ---- the application -------------------------------------------------------------------------------


async def post_init(application: Application) -> None:
    """Open the engine client and register the command list."""
    s = cast(Services, application.bot_data[SERVICES])
    await s.engine.start()
    try:
        await application.bot.set_my_commands([BotCommand(c, d) for c, d in COMMANDS])
    except TelegramError as exc:  # the menu is a convenience: serve anyway
        log.warning("could not register the command list: %s", exc)
    try:
        log.info(
            "engine at %s serves version %s", s.settings.engine_url, (await s.engine.stats()).get("version")
        )
    except (EngineUnavailable, EngineRequestError) as exc:
        log.warning(
            "engine at %s not reachable yet (%s); answering 'busy' until it is", s.settings.engine_url, exc
        )


async def post_shutdown(application: Application) -> None:
    """Close the engine client and caches."""
    s = cast(Services, application.bot_data[SERVICES])
    await s.engine.close()
    await s.file_ids.close()
    await s.retrain.close()


def build_application(settings: BotSettings, token: str | None = None) -> Application:
    """The configured PTB application, with every handler and the shared services."""
    token = token or settings.token
    if not token:
        raise ValueError("a bot token is needed")
    root = settings.telegram_api_url
    application = (
        Application.builder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=settings.telegram_max_retries))
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
        .build()
    )
    application.bot_data[SERVICES] = Services(
        settings=settings,
        engine=EngineClient(settings.engine_url, settings.engine_timeout_s, settings.engine_admin_token),
        file_ids=FileIdCache(settings.redis_url),
        limiter=UserRateLimiter(settings.user_rate_per_minute, settings.user_burst),
        keys=ShortKeys(),
        retrain=make_retrain_manager(settings.retrain),
    )
    application.add_handler(TypeHandler(Update, limit_users), group=-1)
    application.add_handler(CommandHandler(["start", "help"], start))
    application.add_handler(CommandHandler("images", images_cmd))
    application.add_handler(CommandHandler("related", related_cmd))
    application.add_handler(CommandHandler("stats", stats_cmd))
    application.add_handler(CommandHandler("map", map_cmd))
    application.add_handler(CommandHandler("words", words_cmd))
    application.add_handler(CommandHandler("top", top_cmd))
    application.add_handler(CommandHandler("languages", languages_cmd))
    application.add_handler(CommandHandler("retrain", retrain_cmd))
    application.add_handler(MessageHandler(filters.PHOTO | filters.Document.IMAGE, photo_msg))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, text_msg))
    application.add_handler(CallbackQueryHandler(button))
    application.add_handler(InlineQueryHandler(inline_query))
    application.add_error_handler(on_error)
    return application


ALLOWED_UPDATES = ["message", "callback_query", "inline_query"]
WEBHOOK_PATH = "telegram"


def webhook_options(settings: BotSettings) -> dict[str, Any]:
    """The webhook arguments (listen, port, path, public URL, secret) for PTB's run/start_webhook."""
    if not settings.webhook_url:
        raise ValueError("WEBHOOK_URL is not set")
    return {
        "listen": settings.webhook_listen,
        "port": settings.webhook_port,
        "url_path": WEBHOOK_PATH,
        "webhook_url": f"{settings.webhook_url.rstrip('/')}/{WEBHOOK_PATH}",
        "secret_token": settings.webhook_secret,
        "allowed_updates": ALLOWED_UPDATES,
    }


@contextlib.asynccontextmanager
async def running(
    application: Application, mode: str | None = "polling", settings: BotSettings | None = None
) -> AsyncIterator[Application]:
    """Run an application inside ``async with`` (post_init/post_shutdown included).

    ``mode`` is "polling", "webhook" (needs ``settings``) or None (the caller feeds updates itself).
    """
    await application.initialize()
    if application.post_init is not None:
        await application.post_init(application)
    await application.start()
    updater = application.updater
    if mode == "polling":
        assert updater is not None
        await updater.start_polling(poll_interval=0.0, timeout=1, allowed_updates=ALLOWED_UPDATES)
    elif mode == "webhook":
        assert updater is not None and settings is not None
        await updater.start_webhook(**webhook_options(settings))
    try:
        yield application
    finally:
        if updater is not None and updater.running:
            await updater.stop()
        await application.stop()
        if application.post_shutdown is not None:
            await application.post_shutdown(application)
        await application.shutdown()
