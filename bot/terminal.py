"""Chat with the bot in a terminal: the same PTB application, talking to an in-process Bot API.

Albums and pictures are saved as files and shown as paths; buttons are listed and tapped with ``!N``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import tempfile
from pathlib import Path
from typing import IO, Any

from telegram import Update

from bot.app import build_application, running
from bot.local_api import ApiCall, LocalBotApi
from bot.settings import BotSettings

LOCAL_TOKEN = "0:local-terminal-chat"  # a placeholder the local server checks; not a Telegram secret
HELP = (
    "Type a command (/help, /images dog, /related dog, /stats) or words to search images;\n"
    "/photo PATH sends a picture, !N taps button N, /quit or Ctrl-D ends."
)


class Transcript:
    """Prints what the bot sends, saves pictures under ``out_dir``, and remembers the last buttons."""

    def __init__(self, api: LocalBotApi, out: IO[str], out_dir: Path) -> None:
        self.api = api
        self.out = out
        self.out_dir = out_dir
        self.buttons: list[tuple[str, str, dict[str, Any]]] = []

    def _save(self, file_id: str, suffix: str | None = None) -> str:
        data = self.api.files.get(file_id, b"")
        if suffix is None:  # photos come as JPEG (album thumbnails) or PNG (report plots)
            suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        path = self.out_dir / f"{file_id}{suffix}"
        if not path.exists():
            path.write_bytes(data)
        return str(path)

    def _say(self, text: str) -> None:
        self.out.write(text.rstrip() + "\n")
        self.out.flush()

    def _keyboard(self, markup: dict[str, Any] | None, message: dict[str, Any]) -> None:
        rows = (markup or {}).get("inline_keyboard") or []
        labels = []
        for row in rows:
            for b in row:
                if "callback_data" in b:
                    self.buttons.append((b["text"], b["callback_data"], message))
                    labels.append(f"[!{len(self.buttons)}] {b['text']}")
        if labels:
            self._say("      " + "  ".join(labels))

    def __call__(self, call: ApiCall) -> None:
        """Render one Bot API call of the bot."""
        if call.error is not None:
            return
        m, r = call.method, call.result
        if m == "sendMessage":
            text = "\n".join(line.rstrip() for line in call.params["text"].splitlines())
            self._say("bot> " + text.replace("\n", "\n     "))
            self._keyboard(r.get("reply_markup"), r)
        elif m == "editMessageText":
            self._say("bot (update)> " + call.params.get("text", ""))
        elif m == "sendMediaGroup":
            self._say(f"bot> [album of {len(r)} pictures]")
            for i, msg in enumerate(r, 1):
                path = self._save(msg["photo"][-1]["file_id"])
                self._say(f"     {i}. {path}  {msg.get('caption', '')}")
        elif m == "sendPhoto":
            self._say(f"bot> [picture] {self._save(r['photo'][-1]['file_id'])}  {r.get('caption', '')}")
        elif m == "sendDocument":
            doc = r["document"]
            suffix = Path(doc.get("file_name") or "file").suffix or ".bin"
            self._say(f"bot> [file] {self._save(doc['file_id'], suffix)}  {r.get('caption', '')}")
        elif m == "answerCallbackQuery" and call.params.get("text"):
            self._say(f"bot> ({call.params['text']})")
        elif m == "answerInlineQuery":
            results = call.json("results")
            self._say(f"bot> [inline: {len(results)} results]")


async def chat(
    settings: BotSettings,
    stdin: IO[str] | None = None,
    stdout: IO[str] | None = None,
    out_dir: Path | None = None,
) -> None:
    """Run the terminal chat until /quit or end of input."""
    stdin = stdin or sys.stdin
    out = stdout or sys.stdout
    out_dir = out_dir or Path(tempfile.mkdtemp(prefix="topicspace-chat-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    api = LocalBotApi(LOCAL_TOKEN)
    transcript = Transcript(api, out, out_dir)
    api.observer = transcript
    root = await api.start()
    user_id = min(settings.admin_ids) if settings.admin_ids else 1001
    # One person at a keyboard: no per-user flood limit, no Telegram retries.
    local = dataclasses.replace(
        settings,
        telegram_api_url=root,
        token=LOCAL_TOKEN,
        webhook_url=None,
        state_store=None,  # buttons live as long as the chat: nothing of it is kept
        user_burst=1_000_000,
        user_rate_per_minute=1_000_000,
        telegram_max_retries=0,
    )
    application = build_application(local, LOCAL_TOKEN)
    out.write(
        f"TopicSpace terminal chat (engine {settings.engine_url}; pictures saved in {out_dir}).\n{HELP}\n"
    )
    try:
        async with running(application, mode=None):
            while True:
                out.write("you> ")
                out.flush()
                line = await asyncio.to_thread(stdin.readline)
                if not line:
                    out.write("\n")
                    break
                line = line.strip()
                if not stdin.isatty():
                    out.write(line + "\n")  # piped input is not echoed: keep the transcript readable
                    out.flush()
                if not line:
                    continue
                if line in {"/quit", "/exit"}:
                    break
                update = await _update_for(line, api, transcript, user_id, out)
                if update is not None:
                    transcript.buttons.clear()  # !N always means the buttons of the latest answer
                if update is not None:
                    incoming = Update.de_json(update, application.bot)
                    # What getUpdates does for a polling bot: buttons' ids back to their data.
                    application.bot.insert_callback_data(incoming)
                    await application.process_update(incoming)
    finally:
        await api.stop()


async def _update_for(
    line: str, api: LocalBotApi, transcript: Transcript, user_id: int, out: IO[str]
) -> dict[str, Any] | None:
    """The Telegram update a typed line stands for (None when the line was handled here)."""
    update: dict[str, Any]
    if line.startswith("!") and line[1:].isascii() and line[1:].isdigit():
        n = int(line[1:])
        if not 1 <= n <= len(transcript.buttons):
            out.write(f"(no button !{n})\n")
            return None
        _, data, message = transcript.buttons[n - 1]
        update = api.callback_update(data, message, user_id=user_id)
    elif line.startswith("/photo"):
        path = Path(line[len("/photo") :].strip()).expanduser()
        if not path.is_file():
            out.write(f"(no such file: {path})\n")
            return None
        update = api.photo_update(path.read_bytes(), user_id=user_id)
    else:
        update = api.text_update(line, user_id=user_id)
    return {"update_id": len(api.calls) + 1, **update}
