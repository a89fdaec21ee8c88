"""What every command has in common: its name, ``--help``, ``--version``, settings from flags and the
environment, and how it fails (one line, exit status 2 for a bad setting or flag).

``Parser`` is an ``argparse.ArgumentParser`` that

- names itself as it was invoked: ``topicspace-engine`` from the console script, ``python -m engine``
  from ``-m`` (never ``__main__.py``);
- answers ``--version`` with the project's version;
- shows each option's help with its default and, for ``option(..., env=NAME)``, its environment
  variable; lists the variables that have no flag (``variable(NAME, ...)``) under "environment";
- reads an option's variable only when its flag is not given, through a ``space.envvars`` kind, so
  ``ENGINE_WORKERS=abc`` ends in one line naming ``ENGINE_WORKERS`` and what it accepts;
- prints every error in one line (argparse prints the usage first) and exits 2.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from space.envvars import Kind, SettingError, choice
from space.logs import LEVELS, LOG_FORMATS, LogSettings
from space.version import __version__

_ENV_TITLE = "environment variables"
# Errors of a listening socket that the operator can fix: a port in use, one that needs privileges, an
# address that is not this machine's.
BIND_ERRNOS = (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL)


def program_name(module: str, argv0: str | None = None) -> str:
    """How the user invoked the command: the console script's name, or ``python -m <module>``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    base = os.path.basename(argv0)
    if not base or base.endswith(".py") or base in ("-c", "-m"):
        return f"python -m {module}"
    return base


def plain(doc: str | None) -> str | None:
    """A docstring as help text: reStructuredText's literal quotes (``x``, `x`) dropped."""
    if doc is None:
        return None
    return re.sub(r"``([^`]+)``|`([^`]+)`", lambda m: m.group(1) or m.group(2), doc).strip()


def fail(prog: str, message: str, status: int = 2) -> NoReturn:
    """Print ``prog: error: message`` (one line) on stderr and exit."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(status)


def bind_errno(exc: BaseException) -> int | None:
    """The errno of a listening socket's error the operator can fix (port in use, …) in ``exc`` or the
    error it was raised from; None for any other error."""
    for err in (exc, exc.__cause__, exc.__context__):
        if isinstance(err, OSError) and err.errno in BIND_ERRNOS:
            return err.errno
    return None


def bind_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a listening socket's error the operator can fix (port in use, …)."""
    return bind_errno(exc) is not None


def cannot_listen(what: str, host: str, port: int | None, exc: BaseException, fix: str) -> str:
    """One line for a socket that could not listen: where, why in plain words, and which setting to change."""
    code = bind_errno(exc)
    reason = os.strerror(code).lower() if code is not None else str(exc)
    return f"cannot {what} on {host}:{port}: {reason} ({fix})"


@dataclass(frozen=True)
class _FromEnv:
    """An option or variable whose value comes from the environment when its flag is not given."""

    dest: str
    env: str
    kind: Kind
    default: Any


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Raw description and epilog (their line breaks kept); wider option column; each option's default."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=34, width=min(110, max(60, _columns())))

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        shown = action.default not in (None, False, argparse.SUPPRESS, []) and not action.required
        if shown and "%(default)" not in help_text and "default" not in help_text and action.option_strings:
            help_text += " (default: %(default)s)"
        return help_text


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except OSError:
        return 100


class Parser(argparse.ArgumentParser):
    """The argument parser of every topicspace command (see the module docstring)."""

    def __init__(self, module: str | None = None, doc: str | None = None, *,
                 env: Mapping[str, str] | None = None, logging: bool = True,
                 registry: list[_FromEnv] | None = None, **kwargs: Any) -> None:
        if module is not None:
            kwargs.setdefault("prog", program_name(module))
        kwargs.setdefault("formatter_class", HelpFormatter)
        if doc is not None:
            kwargs.setdefault("description", plain(doc))
        super().__init__(**kwargs)
        self.env: Mapping[str, str] = os.environ if env is None else env
        self._registry: list[_FromEnv] = [] if registry is None else registry
        self._variables: list[tuple[str, str]] = []  # (name, help) of the variables without a flag
        if registry is None:  # the top parser (subparsers share its registry and --version)
            self.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                              help="print the version and exit")
            if logging:
                self.variable("LOG_LEVEL", choice(*LEVELS), "INFO", "log level", dest="log_level")
                self.variable("LOG_FORMAT", choice(*LOG_FORMATS), "text",
                              "text, or json: one JSON object a line", dest="log_format")

    # ---- declaring ----
    def option(self, *flags: str, env: str | None = None, kind: Kind | None = None, default: Any = None,
               help: str = "", shown_default: str | None = None, **kwargs: Any) -> argparse.Action:
        """A flag; with ``env``, the variable that sets it when the flag is not given. ``kind`` reads
        both (and says what they accept in the help); ``shown_default`` replaces the default in the help."""
        where = [] if kwargs.get("required") or kwargs.get("action") in ("store_true", "store_false") else [
            f"default: {shown_default if shown_default is not None else _show(default)}"]
        if env:
            where.append(f"env {env}")
        if kind is not None and kind.accepts != "text":
            where.insert(0, kind.accepts)
        full_help = f"{help} ({'; '.join(where)})" if where else help
        if kind is not None:
            kwargs["type"] = _argparse_type(kind)
            if kind.metavar and "metavar" not in kwargs and "choices" not in kwargs:
                kwargs["metavar"] = kind.metavar
        action = self.add_argument(*flags, default=None if env else default, help=full_help, **kwargs)
        if env:
            self._registry.append(_FromEnv(action.dest, env, kind or _TEXT, default))
        return action

    def variable(self, name: str, kind: Kind, default: Any, help: str, *, dest: str | None = None,
                 shown_default: str | None = None) -> None:
        """A setting read from the environment only, listed in ``--help`` (``dest``: its attribute)."""
        shown = shown_default if shown_default is not None else _show(default)
        accepts = "" if kind.accepts == "text" else f"{kind.accepts}; "
        self._variables.append((name, f"{help} ({accepts}default: {shown})"))
        self.set_defaults(**{dest or name.lower(): None})
        self._registry.append(_FromEnv(dest or name.lower(), name, kind, default))

    def add_subparsers(self, **kwargs: Any) -> Any:
        """Subcommands share this parser's environment and variables."""
        kwargs.setdefault("parser_class", _SubParser.bind(self))
        return super().add_subparsers(**kwargs)

    # ---- parsing ----
    def parse(self, argv: Sequence[str] | None = None) -> argparse.Namespace:
        """Parse the flags, then fill what they left unset from the environment (one line, exit 2, for
        a value a flag or a variable does not accept)."""
        return self.parse_args(argv)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's, then the variables of the options left unset (so ``parse_args`` reads them too)."""
        parsed, extras = super().parse_known_args(args, namespace)
        try:
            for item in self._registry:
                if hasattr(parsed, item.dest) and getattr(parsed, item.dest) is None:
                    raw = self.env.get(item.env, "")
                    value = item.kind.parse(raw, item.env) if raw.strip() else item.default
                    setattr(parsed, item.dest, value)
        except SettingError as exc:
            self.error(str(exc))
        return parsed, extras

    def log_settings(self, args: argparse.Namespace) -> LogSettings:
        """``LOG_LEVEL`` and ``LOG_FORMAT`` as parsed."""
        return LogSettings(level=args.log_level or "INFO", format=args.log_format or "text")

    def error(self, message: str) -> NoReturn:
        """One line (no usage block): what is wrong, and where to read more."""
        fail(self.prog, f"{message} (see {self.prog} --help)")

    # ---- help ----
    def format_help(self) -> str:
        """argparse's help, then the environment variables that have no flag."""
        text = super().format_help()
        if not self._variables:
            return text
        width = min(26, max(len(name) for name, _ in self._variables) + 4)
        columns = self._get_formatter()._width
        lines = [f"\n{_ENV_TITLE}:"]
        for name, help_text in self._variables:
            pad = " " * width
            first = f"  {name}".ljust(width) if len(name) + 4 <= width else f"  {name}\n{pad}"
            lines.append(textwrap.fill(help_text, max(60, columns), initial_indent=first,
                                       subsequent_indent=pad, break_on_hyphens=False))
        return text.rstrip("\n") + "\n" + "\n".join(lines) + "\n"


class _SubParser(Parser):
    """A subcommand's parser: the top parser's registry, environment and error style."""

    _parent: Parser

    @classmethod
    def bind(cls, parent: Parser) -> type[_SubParser]:
        """A subclass whose instances share ``parent``'s registry and environment."""
        return type("SubParser", (cls,), {"_parent": parent})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(env=self._parent.env, registry=self._parent._registry, **kwargs)


_TEXT = Kind("text", str)


def _argparse_type(kind: Kind) -> Any:
    def convert(raw: str) -> Any:
        try:
            return kind.parse(raw, "")
        except SettingError as exc:
            raise argparse.ArgumentTypeError(str(exc).removeprefix(": ")) from None

    convert.__name__ = kind.accepts
    return convert


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple | list | frozenset | set):
        return ",".join(str(v) for v in value) or "empty"
    return str(value)
