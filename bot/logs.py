"""Logging set-up for the bot process: levels, format, and a filter that keeps the token out of logs."""

from __future__ import annotations

import logging
from typing import IO

REDACTED = "[REDACTED]"


class RedactingFilter(logging.Filter):
    """Replaces every occurrence of the secrets in a record's message (httpx logs URLs with the token)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message, redact it, and keep the record."""
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, REDACTED)
        if record.exc_info and record.exc_text is None:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        exc_text = record.exc_text
        if exc_text:
            for secret in self.secrets:
                exc_text = exc_text.replace(secret, REDACTED)
            record.exc_text = exc_text
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


def configure_logging(secrets: list[str], level: int = logging.INFO, stream: IO[str] | None = None) -> None:
    """Log to a stream through the redacting filter; keep httpx quiet (it logs every URL)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter(secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
