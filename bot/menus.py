"""The command menus Telegram shows: one per language for everyone, /retrain added in each admin's chat,
and a private chat's menu in the language its user chose with /language."""

from __future__ import annotations

import logging
from typing import Any

from telegram import BotCommand, BotCommandScopeChat
from telegram.error import TelegramError
from telegram.ext import Application

from bot.context import CHOSEN_LANGUAGE
from bot.messages import EN, LANGUAGES, text
from bot.services import application_services

log = logging.getLogger(__name__)

# The command menu, in order; its descriptions are in bot.messages ("cmd_<name>").
COMMANDS = ("images", "related", "stats", "attractions", "map", "words", "top", "languages", "language",
            "help")
ADMIN_COMMANDS = ("retrain",)


def command_list(lang: str, admin: bool = False) -> list[BotCommand]:
    """The command menu in ``lang`` (with the admins' commands for an admin's chat)."""
    names = COMMANDS + (ADMIN_COMMANDS if admin else ())
    return [BotCommand(name, text(lang, f"cmd_{name}")) for name in names]


async def chat_menu(bot: Any, chat_id: int, chosen: str | None, admin: bool) -> None:
    """A private chat's command menu: in the ``chosen`` language whatever the app's language, or (None)
    the menus per app language (an admin's with /retrain; anyone else's: the default ones)."""
    for lang in LANGUAGES:
        language_code = None if lang == EN else lang
        scope = BotCommandScopeChat(chat_id)
        try:
            if chosen is not None or admin:
                await bot.set_my_commands(command_list(chosen or lang, admin), scope=scope,
                                          language_code=language_code)
            else:
                await bot.delete_my_commands(scope=scope, language_code=language_code)
        except TelegramError as exc:  # a convenience: e.g. "chat not found" for an admin who never wrote
            log.warning("could not set the %s command list of chat %d: %s", lang, chat_id, exc)


async def register_commands(application: Application) -> None:
    """The command menu per language; the admins' chats get /retrain too. A menu is a convenience: a
    refusal is logged, not fatal."""
    s = application_services(application)
    bot = application.bot
    for lang in LANGUAGES:
        try:
            await bot.set_my_commands(command_list(lang), language_code=None if lang == EN else lang)
        except TelegramError as exc:
            log.warning("could not register the %s command list for everyone: %s", lang, exc)
    for admin in sorted(s.settings.admin_ids):
        chosen = application.user_data.get(admin, {}).get(CHOSEN_LANGUAGE)
        await chat_menu(bot, admin, chosen if chosen in LANGUAGES else None, admin=True)


