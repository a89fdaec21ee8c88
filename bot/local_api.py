"""An in-process Bot API server (aiohttp, loopback) that the real python-telegram-bot client talks to.

It serves the terminal chat mode (``python -m bot`` without a token) and the tests: it queues updates for
``getUpdates`` (or posts them to a webhook), answers the send/edit/answer methods with well-formed objects,
stores uploaded files so ``getFile`` and file downloads work, can inject errors (e.g. a 429), and records
every call. The update payloads it queues are built by :class:`bot.fake_updates.UpdateFactory`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from bot.fake_checks import (
    Refused,
    check_commands,
    check_inline_answer,
    check_reply_markup,
    commands_for,
    scope_key,
)
from bot.fake_updates import BOT_USER_ID, UpdateFactory

log = logging.getLogger(__name__)

BOT_USERNAME = "topicspace_bot"


@dataclass
class ApiCall:
    """One Bot API request as the server saw it."""

    method: str
    params: dict[str, str]
    files: dict[str, bytes] = field(default_factory=dict)
    result: Any = None
    error: int | None = None

    def json(self, name: str) -> Any:
        """A parameter decoded from JSON (PTB sends lists and objects JSON-encoded)."""
        return json.loads(self.params[name])

    @property
    def text(self) -> str:
        """The text or caption the call carried, if any."""
        return self.params.get("text") or self.params.get("caption") or ""


@dataclass
class _Failure:
    method: str
    code: int
    retry_after: int | None
    times: int


class LocalBotApi(UpdateFactory):
    """A fake Telegram Bot API on loopback: queue updates in, record calls out."""

    def __init__(self, token: str, observer: Callable[[ApiCall], None] | None = None) -> None:
        self.token = token
        self.observer = observer
        self.calls: list[ApiCall] = []
        self.files: dict[str, bytes] = {}
        self.commands: list[dict[str, Any]] = []  # the default menu (no scope, no language)
        self.command_sets: dict[tuple[str, int | None, str], list[dict[str, Any]]] = {}
        self.user_languages: dict[int, str] = {}
        self.inline_ids: set[str] = set()
        self.inline_answered: set[str] = set()
        self.webhook: tuple[str, str | None] | None = None
        self._updates: list[dict[str, Any]] = []
        self._update_ids = itertools.count(1)
        self._ids = itertools.count(1)
        self._failures: list[_Failure] = []
        self._changed = asyncio.Condition()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None
        self.url = ""

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on a (free) loopback port and return the API root URL."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._method)
        app.router.add_get("/file/bot{token}/{path:.*}", self._file)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        # port=0 lets the OS pick a free port; read back which one it chose.
        sock_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{sock_port}"
        return self.url

    async def stop(self) -> None:
        """Stop listening (held long polls answer at once)."""
        async with self._changed:
            self._closing = True
            self._changed.notify_all()
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- feeding updates -------------------------------------------------------------------------
    async def push(self, update: dict[str, Any]) -> dict[str, Any]:
        """Queue an update (an ``update_id`` is assigned) or post it to the webhook if one is set."""
        update = {"update_id": next(self._update_ids), **update}
        if self.webhook is not None:
            await self._deliver(update)
            return update
        async with self._changed:
            self._updates.append(update)
            self._changed.notify_all()
        return update

    async def _deliver(self, update: dict[str, Any]) -> None:
        assert self.webhook is not None
        url, secret = self.webhook
        if self._client is None:
            self._client = aiohttp.ClientSession()
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret else {}
        async with self._client.post(url, json=update, headers=headers) as resp:
            if resp.status != 200:
                log.warning("webhook answered %d", resp.status)

    # ---- inspecting calls ------------------------------------------------------------------------
    def fail_next(self, method: str, code: int = 429, retry_after: int | None = 1, times: int = 1) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (429 carries ``retry_after``)."""
        self._failures.append(_Failure(method, code, retry_after, times))

    def menu(self, user_id: int) -> list[str]:
        """The command names Telegram shows ``user_id`` in their private chat (their language)."""
        return [c["command"] for c in commands_for(self.command_sets, user_id,
                                                   self.user_languages.get(user_id, "en"))]

    def calls_of(self, method: str) -> list[ApiCall]:
        """Recorded successful calls of one method."""
        return [c for c in self.calls if c.method == method and c.error is None]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[ApiCall], bool] | None = None,
        timeout: float = 20.0,
        after: int = 0,
    ) -> ApiCall:
        """Wait until a successful call of ``method`` (from index ``after`` on) matches ``predicate``."""

        def find() -> ApiCall | None:
            for call in self.calls[after:]:
                if call.method == method and call.error is None and (predicate is None or predicate(call)):
                    return call
            return None

        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(find), timeout)
        found = find()
        assert found is not None
        return found

    # ---- HTTP handlers ---------------------------------------------------------------------------
    async def _file(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        file_id = request.match_info["path"].rsplit("/", 1)[-1].split(".")[0]
        data = self.files.get(file_id)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _method(self, request: web.Request) -> web.StreamResponse:
        if request.match_info["token"] != self.token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        method = request.match_info["method"]
        params: dict[str, str] = {}
        files: dict[str, bytes] = {}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                params = {
                    k: v if isinstance(v, str) else json.dumps(v) for k, v in (await request.json()).items()
                }
            else:
                form = await request.post()
                for key, value in form.items():
                    if isinstance(value, web.FileField):
                        files[key] = value.file.read()
                    else:
                        params[key] = str(value)
        params.update({k: v for k, v in request.query.items() if k not in params})
        call = ApiCall(method, params, files)
        failure = next((f for f in self._failures if f.method == method and f.times > 0), None)
        if failure is not None:
            failure.times -= 1
            call.error = failure.code
            body: dict[str, Any] = {
                "ok": False,
                "error_code": failure.code,
                "description": f"Too Many Requests: retry after {failure.retry_after}"
                if failure.code == 429
                else "Bad Request: injected",
            }
            if failure.retry_after is not None:
                body["parameters"] = {"retry_after": failure.retry_after}
            await self._record(call)
            return web.json_response(body, status=failure.code)
        if method == "getUpdates":
            result: Any = await self._get_updates(params)
            call.result = result
            if result:  # empty polls are noise
                await self._record(call)
            return web.json_response({"ok": True, "result": result})
        try:
            result = self._answer(call)
        except (KeyError, Refused) as exc:
            call.error = 400
            await self._record(call)
            reason = exc.args[0] if exc.args else exc
            return web.json_response(
                {"ok": False, "error_code": 400, "description": f"Bad Request: {reason}"}, status=400
            )
        call.result = result
        await self._record(call)
        return web.json_response({"ok": True, "result": result})

    async def _record(self, call: ApiCall) -> None:
        async with self._changed:
            self.calls.append(call)
            self._changed.notify_all()
        if self.observer is not None:
            self.observer(call)

    async def _get_updates(self, params: dict[str, str]) -> list[dict[str, Any]]:
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 30.0)
        async with self._changed:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout > 0:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: bool(self._updates) or self._closing), timeout
                    )
            return list(self._updates[: int(params.get("limit") or 100)])

    def _bot_user(self) -> dict[str, Any]:
        return {
            "id": BOT_USER_ID,
            "is_bot": True,
            "first_name": "TopicSpace",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": True,
        }

    def _sent(self, chat_id: str, **content: Any) -> dict[str, Any]:
        cid = int(chat_id)
        return {
            "message_id": next(self._ids),
            "date": int(time.time()),
            "from": self._bot_user(),
            "chat": {"id": cid, "type": "private", "first_name": "you"},
            **content,
        }

    def _media(self, ref: str, files: dict[str, bytes]) -> str:
        """Resolve an upload (``attach://name`` or a multipart field) or an existing file_id."""
        if ref.startswith("attach://"):
            return self.add_file(files[ref[len("attach://") :]])
        if ref not in self.files:
            raise KeyError("wrong file identifier/HTTP URL specified")
        return ref

    def _answer(self, call: ApiCall) -> Any:
        p, method = call.params, call.method
        markup = {"reply_markup": json.loads(p["reply_markup"])} if "reply_markup" in p else {}
        if markup:
            check_reply_markup(markup["reply_markup"])
        if method == "getMe":
            return self._bot_user()
        if method in {"deleteWebhook", "close", "logOut"}:
            self.webhook = None
            return True
        if method == "setWebhook":
            self.webhook = (p["url"], p.get("secret_token"))
            return True
        if method == "getWebhookInfo":
            url = self.webhook[0] if self.webhook else ""
            return {"url": url, "has_custom_certificate": False, "pending_update_count": 0}
        if method in {"setMyCommands", "deleteMyCommands", "getMyCommands"}:
            return self._commands(method, p)
        if method == "answerInlineQuery":
            check_inline_answer(p, self.inline_ids, self.inline_answered, self.files)
            self.inline_answered.add(p["inline_query_id"])
            return True
        if method == "sendMessage":
            return self._sent(p["chat_id"], text=p["text"], **markup)
        if method in {"editMessageText", "editMessageCaption", "editMessageReplyMarkup"}:
            if "inline_message_id" in p:
                return True
            return self._sent(p["chat_id"], text=p.get("text", ""), **markup) | {
                "message_id": int(p["message_id"])
            }
        if method == "sendPhoto":
            ref = p.get("photo") or "attach://photo"
            file_id = (
                self._media(ref, call.files)
                if "photo" not in call.files
                else self.add_file(call.files["photo"])
            )
            caption = {"caption": p["caption"]} if "caption" in p else {}
            return self._sent(p["chat_id"], photo=self._photo_sizes(file_id), **caption, **markup)
        if method == "sendDocument":
            if "document" in call.files:
                file_id = self.add_file(call.files["document"])
            else:
                file_id = self._media(p["document"], call.files)
            doc = {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_name": p.get("filename", "file"),
            }
            caption = {"caption": p["caption"]} if "caption" in p else {}
            return self._sent(p["chat_id"], document=doc, **caption, **markup)
        if method == "sendMediaGroup":
            group = f"g{next(self._ids)}"
            out = []
            for item in call.json("media"):
                file_id = self._media(item["media"], call.files)
                caption = {"caption": item["caption"]} if item.get("caption") else {}
                out.append(
                    self._sent(
                        p["chat_id"], photo=self._photo_sizes(file_id), media_group_id=group, **caption
                    )
                )
            return out
        if method == "getFile":
            file_id = p["file_id"]
            if file_id not in self.files:
                raise KeyError("file not found")
            return {
                "file_id": file_id,
                "file_unique_id": f"u{file_id}",
                "file_size": len(self.files[file_id]),
                "file_path": f"photos/{file_id}.jpg",
            }
        # sendChatAction, answerCallbackQuery, ... all answer True.
        return True

    def _commands(self, method: str, p: dict[str, str]) -> Any:
        """setMyCommands / deleteMyCommands / getMyCommands for one scope and language."""
        key = scope_key(p)
        if method == "getMyCommands":
            return self.command_sets.get(key, [])
        if method == "deleteMyCommands":
            self.command_sets.pop(key, None)
            return True
        commands = json.loads(p["commands"])
        check_commands(commands)
        self.command_sets[key] = commands
        if key == ("default", None, ""):
            self.commands = commands
        return True
