"""Domain errors shared by the trainer, the engine and the bot.

Each carries a short machine-readable ``code`` so HTTP views can map it to a 4xx JSON body.
"""

from __future__ import annotations


class SpaceError(Exception):
    """Base class: an expected failure caused by input or state, never a bug."""

    code = "error"
    status = 400


class BadImage(SpaceError):
    """The bytes are not an image we can decode."""

    code = "bad_image"


class ImageTooLarge(SpaceError):
    """The image (file size or pixel count) is over the configured limit."""

    code = "image_too_large"
    status = 413


class EmptyQuery(SpaceError):
    """The query holds no usable word."""

    code = "empty_query"


class UnknownWords(SpaceError):
    """None of the query's words are in the vocabulary."""

    code = "unknown_words"

    def __init__(self, message: str, unknown: list[str]) -> None:
        super().__init__(message)
        self.unknown = unknown


class NoBundle(SpaceError):
    """No (valid) model bundle is available."""

    code = "no_bundle"
    status = 503


class BundleInvalid(SpaceError):
    """A bundle is incomplete or corrupt (missing file, bad checksum, bad manifest)."""

    code = "bundle_invalid"
    status = 503


class BundleWriteFailed(SpaceError):
    """Writing a new bundle failed (disk full, file size limit); the active bundle is unchanged."""

    code = "bundle_write_failed"
    status = 507
