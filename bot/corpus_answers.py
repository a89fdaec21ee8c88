"""Answers about the corpus: the texts of /start's summary, /stats (the corpus for everyone, the model's
figures too for admins), /top, /languages and /attractions from the engine's
:class:`~bot.engine_answers.Stats`, and the report's pictures (/map, /words, the plots)."""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence

from babel.dates import format_date
from telegram.constants import ChatAction

from bot.context import BotContext
from bot.engine_answers import Stats
from bot.engine_client import ReportMissing
from bot.messages import EN, LANGUAGES, number, percent, plural, text
from bot.sending import chat_action
from bot.services import services

# Telegram shrinks photos to 2560 px; a bigger mosaic goes as a document too, at full resolution.
MAX_PHOTO_SIDE = 2560
TOP_IN_STATS = 10  # words /stats lists


def language_shares(stats: Stats, lang: str = EN) -> str:
    """The language shares as text, like "en 62% · es 25% · ca 13%" (es/ca: "62 %")."""
    total = sum(stats.languages.values())
    if not total:
        return text(lang, "unknown")
    ranked = sorted(stats.languages.items(), key=lambda kv: -kv[1])
    return " · ".join(f"{code} {percent(lang, n / total)}" for code, n in ranked[:8])


def _or_unknown(value: int | None) -> int | str:
    return "?" if value is None else value


def about_text(stats: Stats, lang: str = EN) -> str:
    """What /start says of the corpus."""
    shares = language_shares(stats, lang)
    if stats.kept is None:
        return text(lang, "about_some", languages=shares)
    return plural(lang, "about", stats.kept, languages=shares)


def _more_lines(stats: Stats, lang: str) -> list[str]:
    """The top words, and the dates of the posts when the report has them."""
    lines = []
    if stats.top_words:
        lines.append(text(lang, "top_line", words=", ".join(w.word for w in stats.top_words[:TOP_IN_STATS])))
    if stats.dates is not None:
        first, last = (date_text(lang, d) for d in stats.dates)
        lines.append(text(lang, "dates_line", first=first, last=last))
    return lines


def date_text(lang: str, stamp: str) -> str:
    """An ISO date (or time) as ``lang`` writes a date ("May 1, 2016", "1 may 2016"); as given when it is
    not one."""
    try:
        day = datetime.date.fromisoformat(stamp[:10])
    except ValueError:
        return stamp[:10]
    return format_date(day, format="medium", locale=lang if lang in LANGUAGES else EN)


def corpus_text(stats: Stats, lang: str = EN) -> str:
    """/stats for everyone: the posts kept, their languages, the top words, the dates."""
    return "\n".join([
        text(lang, "posts_kept", kept=_or_unknown(stats.kept), total=_or_unknown(stats.total)),
        text(lang, "languages_line", shares=language_shares(stats, lang)),
        *_more_lines(stats, lang),
    ])


def stats_text(stats: Stats, lang: str = EN) -> str:
    """The model's figures, for admins: version, corpus size, filter report, languages and image search."""
    lines = [
        text(lang, "version_line", version=stats.version),
        text(lang, "posts_kept", kept=_or_unknown(stats.kept), total=_or_unknown(stats.total)),
    ]
    if stats.dropped is not None:
        reasons = [f"{k.replace('_', ' ')} {number(lang, v)}" for k, v in stats.dropped.items() if v]
        reasons_text = ", ".join(reasons) if reasons else text(lang, "none")
        lines.append(text(lang, "dropped_line", reasons=reasons_text))
    lines.append(text(lang, "sizes_line", images=stats.n_images, words=stats.n_words))
    lines.append(text(lang, "languages_line", shares=language_shares(stats, lang)))
    if stats.image_search is not None:
        figures = ", ".join(f"{k} {number(lang, float(f'{v:.3g}'))}" for k, v in stats.image_search.items())
        lines.append(text(lang, "search_line", figures=figures))
    return "\n".join(lines)


def top_text(stats: Stats, language: str | None, lang: str = EN) -> str:
    """/top [language]: the 20 most frequent words, or why there are none."""
    words = stats.words(language)
    if not words:
        known = ", ".join(sorted(stats.languages)) or text(lang, "none_yet")
        if language:
            return text(lang, "no_top_lang", lang=language, known=known)
        return text(lang, "no_top", known=known)
    body = "\n".join(f"{i}. {w.word}" + (f"  {number(lang, w.count)}" if w.count else "")
                     for i, w in enumerate(words[:20], 1))
    return f"{top_title(language, lang)}:\n{body}"


def top_title(language: str | None, lang: str = EN) -> str:
    """The caption of the top-words plot (and the heading of its text)."""
    return text(lang, "top_title_lang", lang=language) if language else text(lang, "top_title")


def attractions_text(stats: Stats, lang: str = EN) -> str:
    """/attractions: the report's places, most mentioned first (or why there is no ranking: no topic file
    named any place, or none of its places is mentioned)."""
    if stats.attractions is None:
        return text(lang, "attractions_missing")
    if not stats.attractions:
        return text(lang, "attractions_no_topic")
    mentioned = [a for a in stats.attractions if a.mentions > 0]
    if not mentioned:
        return plural(lang, "attractions_none", len(stats.attractions))
    lines = [text(lang, "attractions_title")]
    lines += [text(lang, "attraction_line", rank=a.rank or i, name=a.name,
                   mentions=plural(lang, "n_mentions", a.mentions), posts=plural(lang, "n_posts", a.posts))
              for i, a in enumerate(mentioned[:20], 1)]
    return "\n".join(lines)


def mosaic_names(report_files: Sequence[str]) -> tuple[str | None, str | None]:
    """The t-SNE mosaics to send: (photo, document), from the report's files (names carry the size)."""
    sizes = sorted(int(m.group(1)) for f in report_files if (m := re.fullmatch(r"tsne_mosaic_(\d+)\.png", f)))
    if not sizes:
        return None, None
    photo = max((n for n in sizes if n <= MAX_PHOTO_SIDE), default=sizes[0])
    document = sizes[-1] if sizes[-1] > photo else None
    return f"tsne_mosaic_{photo}.png", f"tsne_mosaic_{document}.png" if document else None


async def send_report(
    context: BotContext,
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
            await context.bot.send_message(chat_id, context.t("no_picture", name=name))
        return False
    action = ChatAction.UPLOAD_DOCUMENT if as_document else ChatAction.UPLOAD_PHOTO
    await chat_action(context, chat_id, action)
    if as_document:
        await context.bot.send_document(chat_id, data, filename=name, caption=caption)
    else:
        await context.bot.send_photo(chat_id, data, caption=caption)
    return True


async def answer_map(context: BotContext, chat_id: int, quiet: bool = False) -> None:
    """The t-SNE mosaic of the images (as a photo, and the biggest one as a document)."""
    photo, document = mosaic_names((await services(context).engine.stats()).report_files)
    if photo is None:
        if not quiet:
            await context.bot.send_message(chat_id, context.t("no_map"))
        return
    await send_report(context, chat_id, photo, context.t("map_caption"), quiet=quiet)
    if document and not quiet:
        await send_report(context, chat_id, document, context.t("full_res"), as_document=True, quiet=True)


async def answer_top(context: BotContext, chat_id: int, language: str | None) -> None:
    """The most frequent words (overall or in one language), text and plot."""
    stats = await services(context).engine.stats()
    await context.bot.send_message(chat_id, top_text(stats, language, context.lang))
    name = f"top_words_{language}.png" if language else "top_words.png"
    title = top_title(language, context.lang)
    await send_report(context, chat_id, name, title, quiet=bool(stats.words(language)))


async def answer_stats(context: BotContext, chat_id: int) -> None:
    """The served bundle's figures (asked afresh), with the languages plot and the map."""
    stats = await services(context).engine.stats(fresh=True)
    if context.is_admin:
        reply = "\n".join([stats_text(stats, context.lang), *_more_lines(stats, context.lang)])
    else:
        reply = corpus_text(stats, context.lang)
    await context.bot.send_message(chat_id, reply)
    await send_report(context, chat_id, "languages.png", context.t("languages_caption"), quiet=True)
    await answer_map(context, chat_id, quiet=True)


async def answer_languages(context: BotContext, chat_id: int) -> None:
    """The language shares, text and plot."""
    stats = await services(context).engine.stats()
    shares = language_shares(stats, context.lang)
    await context.bot.send_message(chat_id, context.t("languages_text", shares=shares))
    await send_report(context, chat_id, "languages.png", context.t("languages_caption"), quiet=True)


async def answer_attractions(context: BotContext, chat_id: int) -> None:
    """The attraction ranking, text and the report's plot."""
    stats = await services(context).engine.stats()
    await context.bot.send_message(chat_id, attractions_text(stats, context.lang))
    if stats.attractions and any(a.mentions for a in stats.attractions):
        await send_report(context, chat_id, "attractions.png", context.t("attractions_caption"), quiet=True)
