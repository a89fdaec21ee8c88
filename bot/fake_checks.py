"""The checks the real Bot API makes that :class:`bot.local_api.LocalBotApi` makes too, so that a bot
which passes against the fake is not refused by Telegram: reply markups, command menus (per scope and
language, resolved as Telegram resolves them), and inline answers (result ids, cached file ids, one
answer per query). Each refusal raises :class:`Refused` with Telegram's own description.
"""

from __future__ import annotations

import json
import re
from typing import Any

_COMMAND = re.compile(r"[a-z0-9_]{1,32}")
_KEYBOARDS = ("inline_keyboard", "keyboard", "remove_keyboard", "force_reply")


class Refused(Exception):
    """A request the real Bot API answers with 400 Bad Request: ``description`` follows "Bad Request: "."""


def check_reply_markup(markup: Any) -> None:
    """A reply markup must be one of the four keyboard objects; inline buttons' data within 64 bytes."""
    if not isinstance(markup, dict) or not any(k in markup for k in _KEYBOARDS):
        raise Refused("can't parse reply keyboard markup JSON object")
    for row in markup.get("inline_keyboard", []):
        for button in row:
            data = button.get("callback_data")
            if data is not None and not 1 <= len(data.encode()) <= 64:
                raise Refused("BUTTON_DATA_INVALID")


def check_commands(commands: Any) -> None:
    """A command menu: at most 100 commands, names of 1–32 of a-z 0-9 _, descriptions of 1–256 chars."""
    if not isinstance(commands, list) or len(commands) > 100:
        raise Refused("commands must be a list of at most 100 BotCommand")
    for command in commands:
        if not _COMMAND.fullmatch(command.get("command", "")):
            raise Refused("BOT_COMMAND_INVALID")
        if not 1 <= len(command.get("description", "")) <= 256:
            raise Refused("BOT_COMMAND_DESCRIPTION_INVALID")


def scope_key(params: dict[str, str]) -> tuple[str, int | None, str]:
    """A setMyCommands/getMyCommands scope and language as (scope type, chat id, language code)."""
    scope = json.loads(params["scope"]) if params.get("scope") else {"type": "default"}
    language = params.get("language_code") or ""
    if language and not re.fullmatch(r"[a-z]{2}", language):
        raise Refused("LANG_CODE_INVALID")
    chat = scope.get("chat_id")
    return str(scope["type"]), int(chat) if chat is not None else None, language


def commands_for(sets: dict[tuple[str, int | None, str], list[dict[str, Any]]], chat_id: int,
                 language: str) -> list[dict[str, Any]]:
    """The menu Telegram shows a user in their private chat: chat scope, then all private chats, then
    default; at each scope the user's language first, then no language."""
    lang = (language or "").split("-")[0]
    for scope in (("chat", chat_id), ("all_private_chats", None), ("default", None)):
        for code in (lang, ""):
            if (scope[0], scope[1], code) in sets:
                return sets[(scope[0], scope[1], code)]
    return []


def check_inline_answer(params: dict[str, str], issued: set[str], answered: set[str],
                        files: dict[str, bytes]) -> None:
    """One answer per inline query the API issued; results with unique ids of 1–64 bytes, at most 50;
    a cached photo's file id known, a photo by URL with its thumbnail; a button's text within 64 chars."""
    query_id = params.get("inline_query_id", "")
    if query_id not in issued or query_id in answered:
        raise Refused("query is too old and response timeout expired or query ID is invalid")
    results = json.loads(params.get("results") or "[]")
    ids = [r.get("id", "") for r in results]
    if len(results) > 50 or len(set(ids)) != len(ids) or not all(1 <= len(i.encode()) <= 64 for i in ids):
        raise Refused("RESULT_ID_INVALID")
    for result in results:
        if result.get("type") != "photo":
            continue
        if "photo_file_id" in result:
            if result["photo_file_id"] not in files:
                raise Refused("wrong file identifier/HTTP URL specified")
        elif not result.get("photo_url") or not result.get("thumbnail_url"):
            raise Refused("PHOTO_URL_INVALID")
    if params.get("button") and not 1 <= len(json.loads(params["button"]).get("text", "")) <= 64:
        raise Refused("BUTTON_TEXT_INVALID")
