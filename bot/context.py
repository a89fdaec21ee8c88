"""The context every handler gets: PTB's ``CallbackContext`` plus who asked — their language and whether
they are an admin — so that answers are written in the user's language without passing it around.

The language is the one the user chose with /language (kept in their user data, which the bot's
persistence saves across restarts), else their Telegram app's, else English."""

from __future__ import annotations

from typing import Any, cast

from telegram import Update
from telegram.ext import Application, CallbackContext, ExtBot

from bot.messages import EN, LANGUAGES, language, number, plural, text
from bot.services import services

# The key of the user's chosen language in their user data (absent: follow the Telegram app's language).
CHOSEN_LANGUAGE = "lang"


class BotContext(CallbackContext[ExtBot[None], dict[Any, Any], dict[Any, Any], dict[Any, Any]]):
    """A ``CallbackContext`` that knows the user's language (``lang``) and id (``user``)."""

    def __init__(
        self, application: Application[Any, Any, Any, Any, Any, Any], chat_id: int | None = None,
        user_id: int | None = None,
    ) -> None:
        super().__init__(application, chat_id=chat_id, user_id=user_id)
        self.user = user_id
        self.lang = EN

    @classmethod
    def from_update(
        cls, update: object, application: Application[Any, Any, Any, Any, Any, Any]
    ) -> BotContext:
        """The context of one update, in the language of the user who sent it (English otherwise)."""
        context = cast(BotContext, super().from_update(update, application))
        if isinstance(update, Update) and update.effective_user is not None:
            chosen = (context.user_data or {}).get(CHOSEN_LANGUAGE)
            context.lang = chosen if chosen in LANGUAGES else language(update.effective_user.language_code)
        return context

    def t(self, key: str, /, **fields: object) -> str:
        """The message ``key`` in the user's language (see :mod:`bot.messages`)."""
        return text(self.lang, key, **fields)

    def tn(self, key: str, n: int, /, **fields: object) -> str:
        """The plural message ``key`` in the user's language, in its form for ``n``."""
        return plural(self.lang, key, n, **fields)

    def num(self, value: float, decimals: int | None = None) -> str:
        """A number as the user's language writes it."""
        return number(self.lang, value, decimals)

    @property
    def is_admin(self) -> bool:
        """Whether the user who sent the update is one of ``ADMIN_IDS``."""
        return self.user is not None and self.user in services(self).settings.admin_ids
