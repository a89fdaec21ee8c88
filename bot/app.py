"""The PTB application's wiring: the builder, the shared services' lifecycle (post_init/post_shutdown),
handler registration, the one error handler, and ``running`` for polling, webhook or a driven loop."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    InvalidCallbackData,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot import handlers
from bot.admin import retrain_cmd
from bot.callbacks import CALLBACK_KEYBOARDS
from bot.context import BotContext
from bot.engine_client import EngineClient, EngineRequestError, EngineUnavailable, NoBundle
from bot.greeting import no_model_text
from bot.inline import answer_inline
from bot.menus import register_commands
from bot.messages import EN, text
from bot.persistence import make_persistence
from bot.retrain import make_retrain_manager
from bot.services import SERVICES, FileIdCache, Services, UserRateLimiter, application_services
from bot.settings import BotSettings

log = logging.getLogger(__name__)

BUSY = text(EN, "busy")
OOPS = text(EN, "oops")

async def on_error(update: object, context: BotContext) -> None:
    """Log the error with its traceback and answer the user briefly, in their language."""
    err = context.error
    busy = isinstance(err, EngineUnavailable)
    if isinstance(err, NoBundle):
        log.warning("the engine has no bundle yet: an admin can /retrain")
    elif busy:
        log.warning("engine unavailable: %s", err)
    else:
        log.error("error while handling an update", exc_info=err)
    if not isinstance(update, Update):
        return
    reply = no_model_text(context) if isinstance(err, NoBundle) else context.t("busy" if busy else "oops")
    with contextlib.suppress(TelegramError):
        if update.callback_query is not None:
            await update.callback_query.answer(reply[:200])
        if update.effective_chat is not None:
            await context.bot.send_message(update.effective_chat.id, reply)
        elif update.inline_query is not None:
            await update.inline_query.answer([], cache_time=5)


async def post_init(application: Application) -> None:
    """Open the engine client and register the command lists."""
    s = application_services(application)
    await s.engine.start()
    await register_commands(application)
    try:
        log.info(
            "engine at %s serves version %s", s.settings.engine_url, (await s.engine.stats()).version
        )
    except NoBundle:
        log.warning("engine at %s has no bundle yet: users are told an admin can /retrain",
                    s.settings.engine_url)
    except (EngineUnavailable, EngineRequestError) as exc:
        log.warning(
            "engine at %s not reachable yet (%s); answering 'busy' until it is", s.settings.engine_url, exc
        )


async def post_shutdown(application: Application) -> None:
    """Close the engine client and caches."""
    s = application_services(application)
    await s.engine.close()
    await s.file_ids.close()
    await s.retrain.close()


def build_application(settings: BotSettings, token: str | None = None) -> Application:
    """The configured PTB application, with every handler and the shared services."""
    token = token or settings.token
    if not token:
        raise ValueError("a bot token is needed")
    root = settings.telegram_api_url
    builder = (
        Application.builder()
        .token(token)
        .base_url(f"{root}/bot")
        .base_file_url(f"{root}/file/bot")
        .rate_limiter(AIORateLimiter(max_retries=settings.telegram_max_retries))
        .context_types(ContextTypes(context=BotContext))
        .arbitrary_callback_data(CALLBACK_KEYBOARDS)
        .concurrent_updates(True)
        .post_init(post_init)
        .post_shutdown(post_shutdown)
    )
    persistence = make_persistence(settings.state_store, token)
    if persistence is not None:
        builder = builder.persistence(persistence)
    application = builder.build()
    application.bot_data[SERVICES] = Services(
        settings=settings,
        engine=EngineClient(settings.engine_url, settings.engine_timeout_s, settings.engine_admin_token,
                            admin_url=settings.engine_admin_url),
        file_ids=FileIdCache(settings.redis_url),
        limiter=UserRateLimiter(settings.user_rate_per_minute, settings.user_burst),
        retrain=make_retrain_manager(settings.retrain),
    )
    application.add_handler(TypeHandler(Update, handlers.limit_users), group=-1)
    application.add_handler(CommandHandler(["start", "help"], handlers.start))
    application.add_handler(CommandHandler("images", handlers.images_cmd))
    application.add_handler(CommandHandler("related", handlers.related_cmd))
    application.add_handler(CommandHandler("stats", handlers.stats_cmd))
    application.add_handler(CommandHandler("map", handlers.map_cmd))
    application.add_handler(CommandHandler("words", handlers.words_cmd))
    application.add_handler(CommandHandler("top", handlers.top_cmd))
    application.add_handler(CommandHandler("languages", handlers.languages_cmd))
    application.add_handler(CommandHandler("attractions", handlers.attractions_cmd))
    application.add_handler(CommandHandler("language", handlers.language_cmd))
    application.add_handler(CommandHandler("retrain", retrain_cmd))
    application.add_handler(MessageHandler(filters.PHOTO | filters.Document.IMAGE, handlers.photo_msg))
    # After every CommandHandler above (a group's first matching handler answers): only unknown commands
    application.add_handler(MessageHandler(filters.COMMAND, handlers.unknown_cmd))
    application.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, handlers.text_msg))
    application.add_handler(CallbackQueryHandler(handlers.expired_button, pattern=InvalidCallbackData))
    application.add_handler(CallbackQueryHandler(handlers.button))
    application.add_handler(InlineQueryHandler(answer_inline))
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
