"""The engine's JSON answers as typed objects, parsed once, in the one shape each endpoint returns.

Each ``parse_*`` function takes a decoded JSON body and returns frozen dataclasses, or raises
:class:`MalformedAnswer` naming the field that is missing or of the wrong type. The shapes are those of
``engine/service.py`` (``/v1/related``, ``/v1/images``, ``/v1/hashtags``, ``/v1/similar``, ``/v1/stats``
with the report's ``stats.json`` inside it) and ``engine/views.py`` (the admin endpoints).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar


class MalformedAnswer(ValueError):
    """An engine answer lacks the shape the engine's API promises (an incompatible engine, or a bug)."""


# ---- field readers: each names the field it refuses ------------------------------------------------

STRING = "a string"
INTEGER = "an integer"
NUMBER = "a number"
BOOLEAN = "a boolean"
LIST = "a list"
OBJECT = "an object"
_TYPES: dict[str, tuple[type, ...]] = {
    STRING: (str,), INTEGER: (int,), NUMBER: (int, float), BOOLEAN: (bool,), LIST: (list,), OBJECT: (dict,),
}
T = TypeVar("T")


def _checked(value: object, kind: str, path: str) -> Any:
    """``value`` when it is of ``kind`` (a JSON boolean is no number), else :class:`MalformedAnswer`."""
    if not isinstance(value, _TYPES[kind]) or (isinstance(value, bool) and kind != BOOLEAN):
        raise MalformedAnswer(f"{path} should be {kind}, got {type(value).__name__}")
    return value


def _get(obj: dict[str, Any], key: str, kind: str, where: str) -> Any:
    """``obj[key]``, which must be there and be of ``kind``."""
    if key not in obj:
        raise MalformedAnswer(f"{where} has no {key!r}")
    return _checked(obj[key], kind, f"{where}.{key}")


def _optional(obj: dict[str, Any], key: str, kind: str, where: str) -> Any:
    """``obj[key]`` of ``kind``, or None when it is missing or null."""
    value = obj.get(key)
    return None if value is None else _checked(value, kind, f"{where}.{key}")


def _each(items: list[Any], where: str, read: Callable[[dict[str, Any], str], T]) -> list[T]:
    """``read(entry, its path)`` for each entry of a list of objects."""
    return [read(_checked(item, OBJECT, f"{where}[{i}]"), f"{where}[{i}]") for i, item in enumerate(items)]


def _values(obj: dict[str, Any], kind: str, where: str) -> dict[str, Any]:
    """An object whose every value is of ``kind``."""
    return {str(k): _checked(v, kind, f"{where}.{k}") for k, v in obj.items()}


# ---- searches --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredWord:
    """A word and its similarity."""

    word: str
    score: float


@dataclass(frozen=True)
class ImageHit:
    """One image the engine ranked, with its caption and engine-relative URL; ``user`` (the author) and
    ``post_id`` (the post it belongs to) when the engine sends them, ``lang`` when the post has one."""

    id: str
    score: float
    caption: str
    url: str
    user: str | None = None
    post_id: str | None = None
    lang: str | None = None


@dataclass(frozen=True)
class ImageAnswer:
    """The engine's answer to an image search (``unknown`` and ``confident`` only for text queries)."""

    images: list[ImageHit]
    unknown: list[str]
    confident: bool
    version: str
    corrected: dict[str, str] = field(default_factory=dict)  # query word → the known word used instead


@dataclass(frozen=True)
class RelatedAnswer:
    """The engine's answer to a related-words query."""

    words: list[ScoredWord]
    unknown: list[str]
    corrected: dict[str, str] = field(default_factory=dict)  # query word → the known word used instead


def _scored_word(hit: dict[str, Any], at: str) -> ScoredWord:
    return ScoredWord(_get(hit, "word", STRING, at), float(_get(hit, "score", NUMBER, at)))


def _image_hit(hit: dict[str, Any], at: str) -> ImageHit:
    return ImageHit(_get(hit, "id", STRING, at), float(_get(hit, "score", NUMBER, at)),
                    _get(hit, "caption", STRING, at), _get(hit, "url", STRING, at),
                    _optional(hit, "user", STRING, at), _optional(hit, "post_id", STRING, at),
                    _optional(hit, "lang", STRING, at))


def _strings(obj: dict[str, Any], key: str, where: str) -> list[str]:
    return [_checked(w, STRING, f"{where}.{key}[{i}]") for i, w in enumerate(_get(obj, key, LIST, where))]


def _corrected(body: dict[str, Any], where: str) -> dict[str, str]:
    """The optional ``corrected`` map of a text answer (misspelt or accent-less words matched)."""
    found = _optional(body, "corrected", OBJECT, where) or {}
    return {str(k): _checked(v, STRING, f"{where}.corrected.{k}") for k, v in found.items()}


def parse_related(data: object) -> RelatedAnswer:
    """``GET /v1/related``: ``{"words": [{"word", "score"}], "unknown": [str], "corrected"?, "version"}``."""
    body = _checked(data, OBJECT, "related")
    return RelatedAnswer(_each(_get(body, "words", LIST, "related"), "related.words", _scored_word),
                         _strings(body, "unknown", "related"), _corrected(body, "related"))


def parse_images(data: object) -> ImageAnswer:
    """``GET /v1/images``: ``{"images": [hit], "unknown": [str], "confident": bool, "version"}``."""
    body = _checked(data, OBJECT, "images")
    return ImageAnswer(
        _each(_get(body, "images", LIST, "images"), "images.images", _image_hit),
        _strings(body, "unknown", "images"),
        _get(body, "confident", BOOLEAN, "images"),
        _get(body, "version", STRING, "images"),
        _corrected(body, "images"),
    )


def parse_similar(data: object) -> ImageAnswer:
    """``POST /v1/similar``: ``{"images": [hit], "version"}`` (every word of a photo is known)."""
    body = _checked(data, OBJECT, "similar")
    return ImageAnswer(_each(_get(body, "images", LIST, "similar"), "similar.images", _image_hit), [], True,
                       _get(body, "version", STRING, "similar"))


def parse_hashtags(data: object) -> list[ScoredWord]:
    """``POST /v1/hashtags``: ``{"hashtags": [{"word", "score"}], "version"}``."""
    body = _checked(data, OBJECT, "hashtags")
    return _each(_get(body, "hashtags", LIST, "hashtags"), "hashtags.hashtags", _scored_word)


# ---- statistics ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordCount:
    """A word and how often the corpus uses it."""

    word: str
    count: int


@dataclass(frozen=True)
class Attraction:
    """One place of the report's attraction ranking: its mentions, the posts naming it, its rank (None:
    never mentioned)."""

    name: str
    mentions: int
    posts: int
    rank: int | None


@dataclass(frozen=True)
class Stats:
    """``GET /v1/stats``: what the bot shows of the active bundle.

    ``kept``, ``total`` and ``dropped`` come from the manifest's filter report and are None for a bundle
    published without one; ``top_words_by_language`` comes from the report's ``stats.json`` ({} without
    one); ``image_search`` is the evaluation's R@K and median rank (None before any evaluation).
    ``attractions`` is the report's ranking of places (None without one); ``dates`` the first and last
    post's date, from the report's ``dates`` {"first", "last"} (None while the report has none).
    """

    version: str
    n_images: int
    n_words: int
    kept: int | None
    total: int | None
    dropped: dict[str, int] | None
    languages: dict[str, int]
    top_words: list[WordCount]
    top_words_by_language: dict[str, list[WordCount]]
    image_search: dict[str, float] | None
    report_files: list[str]
    attractions: list[Attraction] | None = None
    dates: tuple[str, str] | None = None

    def words(self, language: str | None = None) -> list[WordCount]:
        """The top words, overall or for one language ([] for a language the report lacks)."""
        return self.top_words_by_language.get(language, []) if language else self.top_words


def _word_count(entry: dict[str, Any], at: str) -> WordCount:
    return WordCount(_get(entry, "word", STRING, at), _get(entry, "count", INTEGER, at))


def _image_search(metrics: dict[str, Any], where: str) -> dict[str, float] | None:
    search = _optional(metrics, "image_search", OBJECT, where)
    return None if search is None else _values(search, NUMBER, f"{where}.image_search")


def _attraction(entry: dict[str, Any], at: str) -> Attraction:
    return Attraction(_get(entry, "name", STRING, at), _get(entry, "mentions", INTEGER, at),
                      _get(entry, "posts", INTEGER, at), _optional(entry, "rank", INTEGER, at))


def _attractions(report: dict[str, Any]) -> list[Attraction] | None:
    section = _optional(report, "attractions", OBJECT, "stats.report")
    if section is None:
        return None
    where = "stats.report.attractions"
    return _each(_get(section, "ranking", LIST, where), f"{where}.ranking", _attraction)


def _dates(report: dict[str, Any]) -> tuple[str, str] | None:
    dates = _optional(report, "dates", OBJECT, "stats.report")
    if dates is None:
        return None
    where = "stats.report.dates"
    return _get(dates, "first", STRING, where), _get(dates, "last", STRING, where)


def parse_stats(data: object) -> Stats:
    """``GET /v1/stats`` (``engine.service.stats``), with the report's ``stats.json`` as ``report``."""
    body = _checked(data, OBJECT, "stats")
    version = _get(body, "version", STRING, "stats")
    n_images = _get(body, "n_images", INTEGER, "stats")
    n_words = _get(body, "n_words", INTEGER, "stats")
    filter_report = _get(body, "filter_report", OBJECT, "stats")
    dropped = _optional(filter_report, "dropped", OBJECT, "stats.filter_report")
    report = _get(body, "report", OBJECT, "stats")
    where = "stats.report.top_words_by_language"
    by_language = _values(_optional(report, "top_words_by_language", OBJECT, "stats.report") or {}, LIST,
                          where)
    return Stats(
        version=version,
        n_images=n_images,
        n_words=n_words,
        kept=_optional(filter_report, "kept", INTEGER, "stats.filter_report"),
        total=_optional(filter_report, "total", INTEGER, "stats.filter_report"),
        dropped=None if dropped is None else _values(dropped, INTEGER, "stats.filter_report.dropped"),
        languages=_values(_get(body, "languages", OBJECT, "stats"), INTEGER, "stats.languages"),
        top_words=_each(_get(body, "top_words", LIST, "stats"), "stats.top_words", _word_count),
        top_words_by_language={
            code: _each(words, f"{where}.{code}", _word_count) for code, words in by_language.items()
        },
        image_search=_image_search(_get(body, "metrics", OBJECT, "stats"), "stats.metrics"),
        report_files=_strings(body, "report_files", "stats"),
        attractions=_attractions(report),
        dates=_dates(report),
    )


# ---- published bundles (admin) ---------------------------------------------------------------------


@dataclass(frozen=True)
class BundleSummary:
    """One published bundle's filter and retrieval figures (None where its manifest has none)."""

    version: str
    kept: int | None
    total: int | None
    image_search: dict[str, float] | None


@dataclass(frozen=True)
class Versions:
    """``GET /v1/admin/versions``: the published bundles, newest first, and the one being served."""

    served: str | None
    bundles: list[BundleSummary]


@dataclass(frozen=True)
class Switch:
    """``POST /v1/admin/activate`` or ``/reload``: the version now served and the one before."""

    version: str
    previous: str | None


def _bundle_summary(entry: dict[str, Any], at: str) -> BundleSummary:
    metrics = _optional(entry, "metrics", OBJECT, at)  # absent from an unreadable bundle's entry
    return BundleSummary(
        version=_get(entry, "version", STRING, at),
        kept=_optional(entry, "kept", INTEGER, at),
        total=_optional(entry, "total", INTEGER, at),
        image_search=None if metrics is None else _image_search(metrics, f"{at}.metrics"),
    )


def parse_versions(data: object) -> Versions:
    """``{"active", "served", "versions": [entry]}``, newest first; an entry is ``{"version", "created",
    "kept", "total", "metrics"}``, or ``{"version", "error"}`` for a bundle that cannot be read."""
    body = _checked(data, OBJECT, "versions")
    return Versions(
        served=_optional(body, "served", STRING, "versions"),
        bundles=_each(_get(body, "versions", LIST, "versions"), "versions.versions", _bundle_summary),
    )


def parse_switch(data: object) -> Switch:
    """``{"version", "previous"}``."""
    body = _checked(data, OBJECT, "switch")
    return Switch(_get(body, "version", STRING, "switch"), _optional(body, "previous", STRING, "switch"))
