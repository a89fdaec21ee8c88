"""Logging set-up shared by every command (engine, bot, train, the worker, space.announce, train.report):
``LOG_LEVEL``, ``LOG_FORMAT`` (text, or one JSON object a line) and a filter that keeps secrets out.

Every part of a record that reaches a log line is redacted: the rendered message (its arguments
included), the exception's traceback and the ``stack_info`` of ``log.x(..., stack_info=True)``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import IO
from urllib.parse import unquote, urlsplit

from space.envvars import choice, read

REDACTED = "[REDACTED]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
# Variables that hold secrets, whichever process reads them: a child process (the trainer under the
# worker or the bot) inherits its parent's environment, so each redacts them all.
SECRET_VARIABLES = ("TELEGRAM_TOKEN", "ENGINE_ADMIN_TOKEN", "WEBHOOK_SECRET", "REDIS_PASSWORD")
SECRET_URL_VARIABLES = ("REDIS_URL", "BOT_STATE")


@dataclass(frozen=True)
class LogSettings:
    """How a process logs: the level and the line format (``LOG_LEVEL``, ``LOG_FORMAT``)."""

    level: str = "INFO"
    format: str = "text"

    @classmethod
    def from_env(cls, env: Mapping[str, str], default_level: str = "INFO") -> LogSettings:
        """The settings from ``LOG_LEVEL`` and ``LOG_FORMAT`` (SettingError naming a bad one)."""
        return cls(level=read(env, "LOG_LEVEL", choice(*LEVELS), default_level),
                   format=read(env, "LOG_FORMAT", choice(*LOG_FORMATS), "text"))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the traceback or stack when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as JSON (its message and traceback already redacted by the handler's filter)."""
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


class RedactingFilter(logging.Filter):
    """Replaces every occurrence of the secrets in a record's message, traceback and stack."""

    def __init__(self, secrets: Iterable[str | None]) -> None:
        super().__init__()
        # Longest first: a secret that contains another is replaced whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message, redact it and the traceback and stack, and keep the record."""
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = self._redact(message)
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self._redact(record.stack_info)
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """``text`` with every secret replaced (for what a command prints rather than logs)."""
    return RedactingFilter(secrets)._redact(text)


def url_secrets(url: str | None) -> list[str]:
    """The password in a URL's user info (``redis://:PASSWORD@host``), as written and decoded."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def env_secrets(env: Mapping[str, str]) -> list[str]:
    """The secrets an environment holds (tokens, passwords, the passwords in Redis URLs)."""
    direct = [env.get(name, "").strip() for name in SECRET_VARIABLES]
    urls = [s for name in SECRET_URL_VARIABLES for s in url_secrets(env.get(name))]
    return [s for s in direct if s] + urls


class _Stderr(logging.StreamHandler):
    """A handler on whatever ``sys.stderr`` is when a record is written (as logging's last resort is), so
    that a stream swapped after set-up (a test's capture, a closed one) is never written to."""

    @property
    def stream(self) -> IO[str]:
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:
        pass


def configure_logging(
    secrets: Iterable[str | None], level: int | str = logging.INFO, stream: IO[str] | None = None,
    fmt: str = FORMAT, json_lines: bool = False,
) -> None:
    """Log to ``stream`` (stderr) through the redacting filter, replacing the root logger's stream handlers.

    Only plain stream handlers are replaced (a second call, or ``basicConfig``'s): a handler of another
    kind on the root logger (a file, a test's log capture) was put there on purpose and stays.
    """
    handler: logging.StreamHandler[IO[str]] = _Stderr() if stream is None else logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter(fmt))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        if type(old) in (logging.StreamHandler, _Stderr):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def setup_logging(
    settings: LogSettings, secrets: Iterable[str | None] = (), stream: IO[str] | None = None,
    fmt: str = FORMAT, quiet: Iterable[str] = ("httpx", "httpcore"),
) -> None:
    """The one logging set-up of every command: its level and format, the redacting filter over
    ``secrets``, and the chattiest libraries (``quiet``: httpx logs every URL, tokens included) at WARNING."""
    configure_logging(secrets, settings.level, stream, fmt=fmt, json_lines=settings.format == "json")
    for name in quiet:
        logging.getLogger(name).setLevel(logging.WARNING)
