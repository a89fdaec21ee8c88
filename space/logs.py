"""Logging set-up shared by the bot and the engine: one format, and a filter that keeps secrets out.

Every part of a record that reaches a log line is redacted: the rendered message (its arguments
included), the exception's traceback and the ``stack_info`` of ``log.x(..., stack_info=True)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import IO
from urllib.parse import unquote, urlsplit

REDACTED = "[REDACTED]"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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


def url_secrets(url: str | None) -> list[str]:
    """The password in a URL's user info (``redis://:PASSWORD@host``), as written and decoded."""
    if not url:
        return []
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password, unquote(password)] if password else []


def configure_logging(
    secrets: Iterable[str | None], level: int | str = logging.INFO, stream: IO[str] | None = None,
    fmt: str = FORMAT,
) -> None:
    """Log to ``stream`` (stderr) through the redacting filter, replacing the root logger's handlers."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
