"""What a corpus is about: a topic file (TOML) with the topic's names, other cities, attractions, languages.

``python -m train all --topic topics/barcelona.toml`` (or ``TRAIN_TOPIC``). The file holds::

    name = "Barcelona"                       # the topic's display name
    aliases = ["bcn", "barna"]               # its other spellings
    languages = ["en", "es", "ca"]           # caption languages to keep (--languages wins)
    other_cities = ["madrid", "paris"]       # posts naming one of these are dropped
    reference_ranking = ["Sagrada Família"]  # attraction names, most popular first (optional)

    [[attractions]]                          # places the report ranks by mentions
    name = "Sagrada Família"
    aliases = ["sagrada familia", "sagradafamilia"]

The topic's own name and aliases are never dropped as "another city", even where ``other_cities`` (or a
``--cities`` file) lists them. Without a topic file nothing is dropped as another city and the report
ranks no attractions; the filter report lists the city filter as skipped.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The one accent folding (re-exported: train.corpus.filters matches the topic's cities with it).
from space.tokenize import fold as fold

KEYS = ("name", "aliases", "languages", "other_cities", "reference_ranking", "attractions")


class TopicInvalid(ValueError):
    """A topic file that cannot be read or holds something other than the documented keys."""


@dataclass(frozen=True)
class Attraction:
    """A place to count: its display name and every spelling that mentions it."""

    name: str
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class Topic:
    """A topic as its file describes it."""

    name: str
    aliases: tuple[str, ...] = ()
    languages: tuple[str, ...] | None = None  # None: the file says nothing (the command line's default)
    other_cities: tuple[str, ...] = ()
    attractions: tuple[Attraction, ...] = ()
    reference_ranking: tuple[str, ...] = ()
    source: str | None = field(default=None, compare=False)

    @property
    def names(self) -> tuple[str, ...]:
        """The topic's name and aliases."""
        return (self.name, *self.aliases)

    def cities_to_drop(self, cities: Iterable[str] | None = None) -> tuple[str, ...]:
        """``cities`` (default: the file's ``other_cities``) less the topic's own names, in order."""
        own = {fold(n.strip()) for n in self.names}
        listed = self.other_cities if cities is None else tuple(cities)
        return tuple(c for c in listed if fold(c.strip()) not in own)

    def report_places(self) -> dict[str, Any]:
        """The report's attraction settings (``ReportConfig`` fields) for this topic."""
        return {"attractions": self.attractions, "reference_ranking": self.reference_ranking}

    def to_dict(self) -> dict[str, Any]:
        """What a bundle's manifest records of the topic."""
        return {
            "name": self.name,
            "aliases": list(self.aliases),
            "languages": None if self.languages is None else list(self.languages),
            "other_cities": len(self.other_cities),
            "attractions": [a.name for a in self.attractions],
            "reference_ranking": list(self.reference_ranking),
            "source": self.source,
        }


def _strings(data: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TopicInvalid(f"{where}: {key} must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())


def _attractions(data: dict[str, Any], where: str) -> tuple[Attraction, ...]:
    entries = data.get("attractions", [])
    if not isinstance(entries, list):
        raise TopicInvalid(f"{where}: attractions must be a list of [[attractions]] tables")
    out: list[Attraction] = []
    for i, entry in enumerate(entries, 1):
        here = f"{where}: attraction {i}"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
            raise TopicInvalid(f"{here} needs a name")
        unknown = set(entry) - {"name", "aliases"}
        if unknown:
            raise TopicInvalid(f"{here}: unknown keys {sorted(unknown)} (name, aliases)")
        name = entry["name"].strip()
        aliases = (name.lower(), *(a.lower() for a in _strings(entry, "aliases", here)))
        out.append(Attraction(name, tuple(dict.fromkeys(aliases))))
    return tuple(out)


def topic_from_dict(data: dict[str, Any], where: str = "topic") -> Topic:
    """A :class:`Topic` from the parsed TOML (``where`` names the file in errors)."""
    unknown = set(data) - set(KEYS)
    if unknown:
        raise TopicInvalid(f"{where}: unknown keys {sorted(unknown)} (expected {', '.join(KEYS)})")
    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TopicInvalid(f'{where}: name = "..." is required (the topic\'s own name)')
    languages = _strings(data, "languages", where) if "languages" in data else None
    return Topic(
        name=name.strip(),
        aliases=_strings(data, "aliases", where),
        languages=languages,
        other_cities=_strings(data, "other_cities", where),
        attractions=_attractions(data, where),
        reference_ranking=_strings(data, "reference_ranking", where),
        source=where,
    )


def load_topic(path: Path) -> Topic:
    """Read a topic file; :class:`TopicInvalid` (one line naming the file) when it is unusable."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TopicInvalid(f"topic file {path} not found (topics/barcelona.toml shows the format)") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise TopicInvalid(f"topic file {path} cannot be read: {exc}") from None
    return topic_from_dict(data, str(path))


def read_city_list(path: Path) -> tuple[str, ...]:
    """A ``--cities`` file: one city name a line (blank lines and ``#`` comments skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(n for n in (line.split("#", 1)[0].strip() for line in lines) if n)
