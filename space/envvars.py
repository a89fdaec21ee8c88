"""Reading a setting from text (a flag or an environment variable): what it accepts, and the one-line error.

Every command reads its settings through these kinds, so a bad value ends the same way everywhere: one
line naming the variable (or flag), what it accepts and what it got, and exit status 2 (``space.cli``);
never a ``ValueError`` traceback from ``int("abc")``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


class SettingError(ValueError):
    """A setting's value is not one it accepts; the message is one line, ready to print."""


@dataclass(frozen=True)
class Kind:
    """How one setting is read: ``convert`` turns the text into the value or raises ValueError."""

    accepts: str
    convert: Callable[[str], Any]
    # A secret's value is never repeated in an error message.
    secret: bool = False
    # How --help names a flag's value.
    metavar: str | None = None

    def parse(self, raw: str, name: str) -> Any:
        """The value of ``raw`` for the setting ``name``; SettingError when this kind refuses it."""
        try:
            return self.convert(raw.strip())
        except (ValueError, TypeError, OverflowError):
            got = "" if self.secret else f", got {raw!r}"
            raise SettingError(f"{name}: expected {self.accepts}{got}") from None


@dataclass(frozen=True)
class Variable:
    """One environment variable: how it is read, and what ``--help`` says of it (``default`` as shown)."""

    name: str
    kind: Kind
    default: str
    help: str


def _bounded(value: float, low: float | None, high: float | None) -> float:
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(value)
    return value


def _range(low: float | None, high: float | None) -> str:
    if low is not None and high is not None:
        return f" from {low:g} to {high:g}"
    if low is not None:
        return f" ≥ {low:g}"
    return f" ≤ {high:g}" if high is not None else ""


def integer(low: int | None = None, high: int | None = None) -> Kind:
    """A whole number, optionally within [low, high]."""
    return Kind(f"a whole number{_range(low, high)}", lambda s: int(_bounded(int(s), low, high)), metavar="N")


def number(low: float | None = None, high: float | None = None) -> Kind:
    """A number (decimals allowed), optionally within [low, high]."""

    def convert(s: str) -> float:
        value = float(s)
        if value != value:  # NaN passes every comparison
            raise ValueError(s)
        return _bounded(value, low, high)

    return Kind(f"a number{_range(low, high)}", convert, metavar="X")


def choice(*values: str, case: bool = False) -> Kind:
    """One of ``values`` (case-insensitive unless ``case``); the value as listed."""
    by_key = {(v if case else v.lower()): v for v in values}

    def convert(s: str) -> str:
        return by_key[s if case else s.lower()]

    def convert_or_fail(s: str) -> str:
        try:
            return convert(s)
        except KeyError:
            raise ValueError(s) from None

    return Kind("one of " + ", ".join(values), convert_or_fail, metavar="{" + ",".join(values) + "}")


def flag() -> Kind:
    """On or off: 1/true/yes/on or 0/false/no/off."""

    def convert(s: str) -> bool:
        low = s.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ValueError(s)

    return Kind("1/0, true/false, yes/no or on/off", convert, metavar="{1,0}")


def text(secret: bool = False) -> Kind:
    """Any text (a secret's is never repeated in messages)."""
    return Kind("text", str, secret=secret, metavar="TEXT")


def id_list() -> Kind:
    """Comma-separated whole numbers (Telegram ids), blanks ignored."""
    return Kind("comma-separated whole numbers, e.g. 42,1001",
                lambda s: frozenset(int(part) for part in s.replace(" ", "").split(",") if part))


def read(env: Mapping[str, str], name: str, kind: Kind, default: Any = None) -> Any:
    """The value of variable ``name`` in ``env``; ``default`` when it is unset or blank."""
    raw = env.get(name, "")
    if not raw.strip():
        return default
    return kind.parse(raw, name)
