"""Answers about the corpus: the texts of /start's summary, /stats, /top and /languages from the
engine's :class:`~bot.engine_answers.Stats`, and the report's pictures (/map, /words, the plots)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from telegram.constants import ChatAction
from telegram.ext import ContextTypes

from bot.engine_answers import Stats
from bot.engine_client import ReportMissing
from bot.sending import chat_action
from bot.services import services

# Telegram shrinks photos to 2560 px; a bigger mosaic goes as a document too, at full resolution.
MAX_PHOTO_SIDE = 2560


def language_shares(stats: Stats) -> str:
    """The language shares as text, like "en 62% · es 25% · ca 13%"."""
    total = sum(stats.languages.values())
    if not total:
        return "unknown"
    ranked = sorted(stats.languages.items(), key=lambda kv: -kv[1])
    return " · ".join(f"{code} {100 * n / total:.0f}%" for code, n in ranked[:8])


def _or_unknown(value: int | None) -> str:
    return "?" if value is None else str(value)


def about_text(stats: Stats) -> str:
    """What /start says of the corpus."""
    kept = "some" if stats.kept is None else stats.kept
    return f"I know {kept} posts (languages: {language_shares(stats)}; model {stats.version}).\n\n"


def stats_text(stats: Stats) -> str:
    """/stats: version, corpus size, filter report, languages and image-search figures."""
    lines = [
        f"Model version: {stats.version}",
        f"Posts kept: {_or_unknown(stats.kept)} of {_or_unknown(stats.total)}",
    ]
    if stats.dropped is not None:
        reasons = [f"{k.replace('_', ' ')} {v}" for k, v in stats.dropped.items() if v]
        lines.append("Dropped: " + (", ".join(reasons) if reasons else "none"))
    lines.append(f"Images: {stats.n_images}, words in the space: {stats.n_words}")
    lines.append(f"Languages: {language_shares(stats)}")
    if stats.image_search is not None:
        lines.append("Image search: " + ", ".join(f"{k} {v:.3g}" for k, v in stats.image_search.items()))
    return "\n".join(lines)


def top_text(stats: Stats, language: str | None) -> str:
    """/top [language]: the 20 most frequent words, or why there are none."""
    words = stats.words(language)
    if not words:
        known = ", ".join(sorted(stats.languages)) or "none yet"
        return f"No top words{f' for {language}' if language else ''} in the report yet (languages: {known})."
    body = "\n".join(
        f"{i}. {w.word}" + (f"  {w.count:g}" if w.count else "") for i, w in enumerate(words[:20], 1)
    )
    return f"{top_title(language)}:\n{body}"


def top_title(language: str | None) -> str:
    """The caption of the top-words plot (and the heading of its text)."""
    return f"Top words ({language})" if language else "Top words"


def mosaic_names(report_files: Sequence[str]) -> tuple[str | None, str | None]:
    """The t-SNE mosaics to send: (photo, document), from the report's files (names carry the size)."""
    sizes = sorted(int(m.group(1)) for f in report_files if (m := re.fullmatch(r"tsne_mosaic_(\d+)\.png", f)))
    if not sizes:
        return None, None
    photo = max((n for n in sizes if n <= MAX_PHOTO_SIDE), default=sizes[0])
    document = sizes[-1] if sizes[-1] > photo else None
    return f"tsne_mosaic_{photo}.png", f"tsne_mosaic_{document}.png" if document else None


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
    action = ChatAction.UPLOAD_DOCUMENT if as_document else ChatAction.UPLOAD_PHOTO
    await chat_action(context, chat_id, action)
    if as_document:
        await context.bot.send_document(chat_id, data, filename=name, caption=caption)
    else:
        await context.bot.send_photo(chat_id, data, caption=caption)
    return True


async def answer_map(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    """The t-SNE mosaic of the images (as a photo, and the biggest one as a document)."""
    photo, document = mosaic_names((await services(context).engine.stats()).report_files)
    if photo is None:
        await context.bot.send_message(chat_id, "The report has no t-SNE map picture yet.")
        return
    await send_report(context, chat_id, photo, "The images laid out by t-SNE")
    if document:
        await send_report(context, chat_id, document, "Full resolution", as_document=True, quiet=True)


async def answer_top(context: ContextTypes.DEFAULT_TYPE, chat_id: int, language: str | None) -> None:
    """The most frequent words (overall or in one language), text and plot."""
    stats = await services(context).engine.stats()
    await context.bot.send_message(chat_id, top_text(stats, language))
    name = f"top_words_{language}.png" if language else "top_words.png"
    await send_report(context, chat_id, name, top_title(language), quiet=bool(stats.words(language)))


async def answer_stats(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    """The served bundle's figures (asked afresh), with the languages plot."""
    stats = await services(context).engine.stats(fresh=True)
    await context.bot.send_message(chat_id, stats_text(stats))
    await send_report(context, chat_id, "languages.png", "Languages of the kept posts", quiet=True)


async def answer_languages(context: ContextTypes.DEFAULT_TYPE, chat_id: int) -> None:
    """The language shares, text and plot."""
    stats = await services(context).engine.stats()
    await context.bot.send_message(chat_id, f"Languages of the kept posts: {language_shares(stats)}")
    await send_report(context, chat_id, "languages.png", "Languages", quiet=True)
