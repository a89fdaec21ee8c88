"""Every text the bot shows people, in English, Spanish and Catalan: gettext catalogs read with Babel.

The catalogs are ``bot/locale/{en,es,ca}.po`` (package data). Their message ids are keys ("busy",
"images_for"); en.po holds the English. ``text(lang, key, **fields)`` is the entry of ``key`` with its
``{fields}``; ``plural(lang, key, n, **fields)`` picks the entry's plural form for ``n`` (the language's
rule, from the catalog's ``Plural-Forms``) and passes ``n`` as ``{n}``. Numbers among the fields are
written as the language writes them (``8,089`` in English, ``8.089`` in Spanish and Catalan; ``0.76`` /
``0,76``), by Babel from CLDR.

The ``.po`` files are compiled in memory when first used (Babel's ``write_mo``, tens of milliseconds once),
so what ships is what is reviewed and nothing compiled can fall out of step with it. Adding a message:
``python scripts/add_message.py KEY EN ES CA`` (``--plural`` for one with a count) appends it to the three
catalogs; tests/bot/test_messages.py checks that they have the same keys and ``{fields}`` and that every
key the code asks for exists.
"""

from __future__ import annotations

import functools
import io
from pathlib import Path

from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal, format_percent
from babel.support import Translations

EN, ES, CA = "en", "es", "ca"
LANGUAGES = (EN, ES, CA)
# Each language in its own words (the /language buttons).
LANGUAGE_NAMES = {EN: "English", ES: "Español", CA: "Català"}
LOCALE_DIR = Path(__file__).with_name("locale")


def language(code: str | None) -> str:
    """The bot's language for a Telegram ``language_code`` ("es", "ca-ES", …); English otherwise."""
    base = (code or "").split("-")[0].lower()
    return base if base in LANGUAGES else EN


def catalog_path(lang: str) -> Path:
    """The ``.po`` file of ``lang``."""
    return LOCALE_DIR / f"{lang}.po"


@functools.cache
def translations(lang: str) -> Translations:
    """``lang``'s catalog, compiled in memory (English behind Spanish and Catalan for a missing entry)."""
    with catalog_path(lang).open("rb") as f:
        catalog = read_po(f, locale=lang)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    loaded = Translations(compiled, domain="bot")
    if lang != EN:
        loaded.add_fallback(translations(EN))
    return loaded


def number(lang: str, value: float, decimals: int | None = None) -> str:
    """``value`` as ``lang`` writes it: grouped thousands, its decimal mark; ``decimals`` fixed when given."""
    fmt = None if decimals is None else "#,##0" + ("." + "0" * decimals if decimals else "")
    return format_decimal(value, format=fmt, locale=_locale(lang))


def percent(lang: str, fraction: float) -> str:
    """``fraction`` (0.53) as ``lang`` writes a whole percentage ("53%", "53 %")."""
    return format_percent(fraction, locale=_locale(lang))


def _locale(lang: str) -> str:
    return lang if lang in LANGUAGES else EN


def _fields(lang: str, fields: dict[str, object]) -> dict[str, object]:
    """The fields, numbers written in ``lang`` (bools and text as they are)."""
    return {k: number(lang, v) if isinstance(v, int | float) and not isinstance(v, bool) else v
            for k, v in fields.items()}


def text(lang: str, key: str, /, **fields: object) -> str:
    """The message ``key`` in ``lang`` (English for a language the bot lacks), with its fields."""
    return translations(_locale(lang)).gettext(key).format(**_fields(lang, fields))


def plural(lang: str, key: str, n: int, /, **fields: object) -> str:
    """The plural message ``key`` in ``lang``, in its form for ``n`` (given as ``{n}``), with its fields."""
    form = translations(_locale(lang)).ngettext(key, key, n)
    return form.format(**_fields(lang, {"n": n, **fields}))
