"""What of a bundle's manifest and report the public API shows: everything but where things are on the server.

The trainer records paths for its own use (the corpus folder in ``manifest.corpus.path``, the files a bad
ingest record came from in ``filter_report.ingest.examples``, each image's file in the report's layout);
``/v1/stats`` and ``/v1/report/*.json`` are public, so those fields are left out of them here, in one place,
whatever the bundle holds. Admins see the whole manifest on the server itself.
"""

from __future__ import annotations

from typing import Any

# Fields that hold server paths (or records naming them), at any depth.
PRIVATE_FIELDS = frozenset({"path", "paths", "corpus_root", "examples"})


def public(value: Any) -> Any:
    """``value`` (parsed JSON) without :data:`PRIVATE_FIELDS`, at any depth."""
    if isinstance(value, dict):
        return {k: public(v) for k, v in value.items() if k not in PRIVATE_FIELDS}
    if isinstance(value, list):
        return [public(v) for v in value]
    return value
