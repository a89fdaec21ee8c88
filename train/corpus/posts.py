"""The one record every corpus reader yields, whatever the source format."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from space.errors import SpaceError

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(value: str) -> str:
    """``value`` with each lone surrogate as U+FFFD. Only a JSON escape (``"\\ud83d"``) can put one in a
    string, and no UTF-8 file can hold it: saving the posts, the vocabulary or the bundle would fail."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


@dataclass(frozen=True)
class Post:
    """One post: an image and its caption, plus what the source knows about it.

    ``captions`` holds every reference caption when a corpus has several per image (Flickr8k: five;
    evaluation needs each); ``caption`` is the text the post is filtered and embedded by.
    ``lang`` and ``split`` may be given by the corpus or set later by the filter and split stages
    (use ``dataclasses.replace``).
    """

    id: str
    image: Path
    caption: str
    user: str | None = None
    taken_at: str | None = None
    lang: str | None = None
    split: str | None = None
    captions: tuple[str, ...] = ()
    source: Mapping[str, Any] = field(default_factory=dict)

    @property
    def reference_captions(self) -> tuple[str, ...]:
        """The captions evaluation compares against (``captions`` or just ``caption``)."""
        return self.captions or (self.caption,)

    def language_of(self, text: str) -> str | None:
        """The language of one of the post's texts: ``lang`` for its own caption; unknown for the other
        reference captions (a multilingual corpus may hold the image's translations there)."""
        return self.lang if text == self.caption else None


class EmptyCorpus(SpaceError):
    """Nothing to train on: the corpus is empty or the filters dropped every post."""

    code = "empty_corpus"
