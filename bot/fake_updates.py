"""The updates Telegram sends a bot (messages, photos, image documents, inline queries, button taps),
built for :class:`bot.local_api.LocalBotApi`, which files the photos as if Telegram held them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

BOT_USER_ID = 777000


class UpdateFactory:
    """Builds update payloads; the class using it provides the id counter, the file store, the inline
    query ids it has issued, and each user's language (``user_languages``: user id → IETF code, as the
    user's Telegram app reports it; "en" when not set)."""

    files: dict[str, bytes]
    inline_ids: set[str]
    user_languages: dict[int, str]
    _ids: Iterator[int]

    def user(self, user_id: int = 1001, first_name: str = "Ada") -> dict[str, Any]:
        """A Telegram user object (``language_code`` from ``user_languages``)."""
        return {"id": user_id, "is_bot": False, "first_name": first_name,
                "language_code": self.user_languages.get(user_id, "en")}

    def _message(self, chat_id: int, sender: dict[str, Any], **content: Any) -> dict[str, Any]:
        chat = {"id": chat_id, "type": "private", "first_name": sender.get("first_name", "")}
        return {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "chat": chat,
            "from": sender,
            **content,
        }

    def add_file(self, data: bytes) -> str:
        """Store a file as if Telegram held it, and return its file_id."""
        file_id = f"file-{next(self._ids)}"
        self.files[file_id] = data
        return file_id

    def _photo_sizes(self, file_id: str) -> list[dict[str, Any]]:
        size = len(self.files.get(file_id, b""))
        return [
            {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "width": 640,
                "height": 480,
                "file_size": size,
            }
        ]

    def text_update(self, text: str, user_id: int = 1001, chat_id: int | None = None) -> dict[str, Any]:
        """A message update carrying text (commands get their entity, as Telegram does)."""
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            length = len(text.split()[0])
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": length}]
        msg = self._message(chat_id or user_id, self.user(user_id), **content)
        return {"message": msg}

    def photo_update(
        self, data: bytes, user_id: int = 1001, as_document: bool = False, caption: str | None = None
    ) -> dict[str, Any]:
        """A message update carrying a photo (or an image sent as a document)."""
        file_id = self.add_file(data)
        if as_document:
            content: dict[str, Any] = {
                "document": {
                    "file_id": file_id,
                    "file_unique_id": f"u{file_id}",
                    "file_name": "photo.jpg",
                    "mime_type": "image/jpeg",
                    "file_size": len(data),
                }
            }
        else:
            content = {"photo": self._photo_sizes(file_id)}
        if caption:
            content["caption"] = caption
        return {"message": self._message(user_id, self.user(user_id), **content)}

    def inline_update(self, query: str, offset: str = "", user_id: int = 1001) -> dict[str, Any]:
        """An inline query update."""
        query_id = f"iq{next(self._ids)}"
        self.inline_ids.add(query_id)
        return {
            "inline_query": {
                "id": query_id,
                "from": self.user(user_id),
                "query": query,
                "offset": offset,
            }
        }

    def callback_update(
        self, data: str, message: dict[str, Any] | None = None, user_id: int = 1001
    ) -> dict[str, Any]:
        """A callback query update, as when a user taps an inline button under ``message``."""
        if message is None:
            message = self._message(
                user_id, {"id": BOT_USER_ID, "is_bot": True, "first_name": "bot"}, text="…"
            )
        return {
            "callback_query": {
                "id": f"cq{next(self._ids)}",
                "from": self.user(user_id),
                "chat_instance": "ci",
                "data": data,
                "message": message,
            }
        }
