"""What the bot keeps across restarts: the buttons' callback data and the users' data.

``make_persistence`` picks the store from ``BOT_STATE``: a ``redis://`` URL gives :class:`RedisPersistence`
(JSON in Redis, shared by every bot process), a file path PTB's own ``PicklePersistence``. bot_data is never
persisted: it holds the live services (engine client, caches), rebuilt at each start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from telegram.ext import BasePersistence, PersistenceInput, PicklePersistence

log = logging.getLogger(__name__)

# Seconds between two saves: a crash loses at most the buttons sent in this window.
UPDATE_INTERVAL_S = 5.0
STORED = PersistenceInput(bot_data=False, chat_data=False, user_data=True, callback_data=True)

Data = dict[Any, Any]
# The shapes BasePersistence's methods take, as python-telegram-bot documents them (its own aliases live in
# a private module): the buttons' data ([(keyboard id, access time, {button id: data})], {query id:
# keyboard id}), and a ConversationHandler's states by key.
CDCData = tuple[list[tuple[str, float, dict[str, Any]]], dict[str, str]]
ConversationKey = tuple[int | str, ...]
ConversationDict = MutableMapping[ConversationKey, object]


class RedisPersistence(BasePersistence[Data, Data, Data]):
    """User data and callback data as JSON under ``<prefix>user_data`` (a hash) and
    ``<prefix>callback_data``; a Redis outage is logged and costs only what it could not save."""

    def __init__(self, url: str, prefix: str, update_interval: float = UPDATE_INTERVAL_S) -> None:
        super().__init__(store_data=STORED, update_interval=update_interval)
        import redis.asyncio as aioredis

        self.redis = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self.prefix = prefix
        self._saved_callback_data: str | None = None

    async def get_user_data(self) -> dict[int, Data]:
        """Every user's data."""
        try:
            raw = await self.redis.hgetall(f"{self.prefix}user_data")
        except Exception as exc:  # start anyway: the users' data are a convenience
            log.warning("could not read the users' data from Redis: %s", type(exc).__name__)
            return {}
        return {int(k): json.loads(v) for k, v in raw.items()}

    async def get_chat_data(self) -> dict[int, Data]:
        """Chat data are not kept."""
        return {}

    async def get_bot_data(self) -> Data:
        """Bot data are not kept (they hold the live services)."""
        return {}

    async def get_callback_data(self) -> CDCData | None:
        """The buttons' data: ([(keyboard id, access time, {button id: data})], {query id: keyboard id})."""
        try:
            raw = await self.redis.get(f"{self.prefix}callback_data")
        except Exception as exc:  # start anyway: old buttons will answer "expired"
            log.warning("could not read the buttons' data from Redis: %s", type(exc).__name__)
            return None
        if raw is None:
            return None
        keyboards, queries = json.loads(raw)
        return [(uuid, float(at), dict(buttons)) for uuid, at, buttons in keyboards], dict(queries)

    async def get_conversations(self, name: str) -> ConversationDict:
        """No ConversationHandler is used."""
        return {}

    async def update_conversation(self, name: str, key: ConversationKey, new_state: object | None) -> None:
        """No ConversationHandler is used."""

    async def update_user_data(self, user_id: int, data: Data) -> None:
        """Save one user's data."""
        await self._write("user data", self.redis.hset(f"{self.prefix}user_data", str(user_id),
                                                       json.dumps(data)))

    async def update_chat_data(self, chat_id: int, data: Data) -> None:
        """Chat data are not kept."""

    async def update_bot_data(self, data: Data) -> None:
        """Bot data are not kept."""

    async def update_callback_data(self, data: CDCData) -> None:
        """Save the buttons' data (when they changed)."""
        encoded = json.dumps(data)
        if encoded != self._saved_callback_data and await self._write(
            "buttons' data", self.redis.set(f"{self.prefix}callback_data", encoded)
        ):
            self._saved_callback_data = encoded

    async def drop_chat_data(self, chat_id: int) -> None:
        """Chat data are not kept."""

    async def drop_user_data(self, user_id: int) -> None:
        """Forget one user's data."""
        await self._write("user data", self.redis.hdel(f"{self.prefix}user_data", str(user_id)))

    async def refresh_user_data(self, user_id: int, user_data: Data) -> None:
        """Nothing to refresh: this process holds the current data."""

    async def refresh_chat_data(self, chat_id: int, chat_data: Data) -> None:
        """Chat data are not kept."""

    async def refresh_bot_data(self, bot_data: Data) -> None:
        """Bot data are not kept."""

    async def flush(self) -> None:
        """Close the connection (every write went out when it was made)."""
        await self.redis.aclose()

    async def _write(self, what: str, command: Any) -> bool:
        try:
            await command
        except Exception as exc:  # the next save tries again
            log.warning("could not save the %s to Redis: %s", what, type(exc).__name__)
            return False
        return True


def make_persistence(store: str | None, token: str) -> BasePersistence[Any, Any, Any] | None:
    """The persistence for ``BOT_STATE``: Redis (keys prefixed with the bot's id), a pickle file, or None."""
    if not store:
        return None
    if store.startswith(("redis://", "rediss://", "unix://")):
        bot_id = token.split(":", 1)[0]
        return RedisPersistence(store, prefix=f"topicspace:bot:{bot_id}:")
    path = Path(store)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # serve anyway: buttons then last as long as the process
        log.warning("cannot keep the bot's state in %s (%s): buttons will not survive a restart", path, exc)
        return None
    return PicklePersistence(path, store_data=STORED, update_interval=UPDATE_INTERVAL_S)
