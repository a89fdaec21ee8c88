"""What /start and /help say: the corpus in one line, then how to ask, with examples the served bundle
answers (:mod:`bot.examples`); before the first bundle, that there is no model yet and, to an admin, the
exact next step."""

from __future__ import annotations

from bot.context import BotContext
from bot.corpus_answers import about_text
from bot.engine_client import EngineRequestError, EngineUnavailable, NoBundle
from bot.examples import Examples
from bot.services import services
from space.version import __version__


def no_model_text(context: BotContext) -> str:
    """"No model yet", and for an admin what to do about it with this bot's configuration."""
    if not context.is_admin:
        return context.t("no_model")
    job = services(context).settings.retrain
    if job.corpus and job.models_dir:
        return context.t("no_model_retrain", corpus=job.corpus, models=job.models_dir)
    return context.t("no_model_setup")


def _how_to_ask(context: BotContext, examples: Examples | None) -> list[str]:
    words = context.t("words_arg")
    lines = [context.t("ask_me"), context.t("help_images", q=examples.images if examples else words)]
    if examples is not None and examples.subtract:
        lines.append(context.t("help_subtract", q=examples.subtract))
    if examples is not None and examples.filtered:
        lines.append(context.t("help_lang", q=examples.filtered, codes=", ".join(examples.codes)))
    lines += [
        context.t("help_related", q=examples.related if examples else words),
        context.t("help_photo"),
        context.t("help_corpus"),
        context.t("help_inline", bot=context.bot.username, q=examples.inline if examples else words),
        context.t("help_language"),
        context.t("help_plain"),
    ]
    if context.is_admin and examples is not None:
        lines.append(context.t("help_admin", placeholder=context.t("placeholder", q=examples.inline)))
    if context.is_admin:
        lines.append(context.t("version_software", version=__version__))
    return lines


async def help_text(context: BotContext) -> str:
    """The greeting: what the bot is, what it knows, and how to ask (examples from the served bundle)."""
    s = services(context)
    head = [context.t("greeting")]
    examples: Examples | None = None
    try:
        head.append(about_text(await s.engine.stats(), context.lang))
        examples = await s.examples.get(s.engine, context.lang)
    except NoBundle:
        head.append(no_model_text(context))
    except (EngineUnavailable, EngineRequestError):
        pass  # the engine is away: the greeting goes without the corpus and examples
    return "\n".join(head) + "\n\n" + "\n".join(_how_to_ask(context, examples))
