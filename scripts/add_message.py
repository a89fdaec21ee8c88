"""Add one message to the bot's catalogs (bot/locale/{en,es,ca}.po) in one step.

    python scripts/add_message.py KEY "English" "Español" "Català"
    python scripts/add_message.py --plural KEY "{n} photo|{n} photos" "{n} foto|{n} fotos" "{n} foto|…"

A plural message gives each language's forms separated by ``|`` (one, other) and is called as
``context.tn(KEY, n)``; any other as ``context.t(KEY, field=…)``. The entry is appended to the three
catalogs; a key already there, or fields that differ between the languages, are refused.
tests/bot/test_messages.py checks the result.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

LANGUAGES = ("en", "es", "ca")
LOCALE = Path(__file__).resolve().parents[1] / "bot" / "locale"
FIELD = re.compile(r"{(\w+)")


def _quote(text: str) -> str:
    """A .po string literal (JSON's escapes are the .po ones for quotes, backslashes and newlines)."""
    return json.dumps(text, ensure_ascii=False)


def entry(key: str, forms: list[str]) -> str:
    """The .po entry of ``key``: one msgstr, or msgstr[0..] for plural forms."""
    if len(forms) == 1:
        return f"msgid {_quote(key)}\nmsgstr {_quote(forms[0])}\n"
    lines = [f"msgid {_quote(key)}", f"msgid_plural {_quote(key)}"]
    lines += [f"msgstr[{i}] {_quote(form)}" for i, form in enumerate(forms)]
    return "\n".join(lines) + "\n"


def add(key: str, texts: list[str], plural: bool, locale: Path = LOCALE) -> None:
    """Append ``key`` to each catalog (``texts`` in en, es, ca order); ValueError when it cannot."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", key):
        raise ValueError(f"{key!r}: a key is lower-case letters, digits and _")
    forms = [t.split("|") if plural else [t] for t in texts]
    if plural and any(len(f) != 2 for f in forms):
        raise ValueError("a plural message gives two forms a language: 'one|other'")
    fields = [{f for form in fs for f in FIELD.findall(form)} for fs in forms]
    if any(f != fields[0] for f in fields):
        raise ValueError(f"the languages' fields differ: {dict(zip(LANGUAGES, fields, strict=True))}")
    catalogs = {lang: locale / f"{lang}.po" for lang in LANGUAGES}
    for path in catalogs.values():
        if f"\nmsgid {_quote(key)}\n" in path.read_text(encoding="utf-8"):
            raise ValueError(f"{key} is already in {path.name}")
    for (_lang, path), fs in zip(catalogs.items(), forms, strict=True):
        text = path.read_text(encoding="utf-8").rstrip("\n")
        path.write_text(f"{text}\n\n{entry(key, fs)}", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and add the message; 2 with one line when it cannot."""
    parser = argparse.ArgumentParser(prog="python scripts/add_message.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plural", action="store_true", help="forms 'one|other' in each language")
    parser.add_argument("--locale", type=Path, default=LOCALE, help="the catalogs' folder")
    parser.add_argument("key", help="the message's key, e.g. no_more")
    parser.add_argument("texts", nargs=3, metavar="TEXT", help="the English, Spanish and Catalan text")
    args = parser.parse_args(argv)
    try:
        add(args.key, args.texts, args.plural, args.locale)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
