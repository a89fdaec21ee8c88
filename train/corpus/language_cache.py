"""Language detections kept on disk, so a rerun of the filters never detects a caption twice.

Detecting a caption's language is the longest part of the filters (about 2 ms a caption on two cores:
20 minutes at 600,000 posts), and the filter stage's cache key holds every filter setting: a killed run, or
one with other ``--languages`` or another city list, would detect everything again. The detections depend
only on the caption's text and the detector's settings, so they are cached by those alone, in a folder of
their own (:func:`cache_folder`) beside the stage folders: chunk files of :data:`CHUNK` detections, each
written whole under a temporary name and renamed, so a killed run loses at most the chunk it was writing.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from train.config import config_hash

log = logging.getLogger(__name__)

CHUNK = 5_000  # about 10 s of detection on two cores
Detection = list[tuple[str, float]]
# Bump when the detection key (train.corpus.filters._detection_key) or the seeding changes.
KEY_VERSION = 1


def detector_settings(seed: int) -> dict[str, object]:
    """What a detection depends on besides the text: the library, its version and seed, the key's form."""
    try:
        lib = version("langdetect")
    except PackageNotFoundError:
        lib = "unknown"
    return {"detector": "langdetect", "version": lib, "seed": seed, "key": KEY_VERSION}


def cache_folder(work: Path, seed: int) -> Path:
    """The detections folder for these detector settings under a work dir."""
    return work / f"languages-{config_hash(detector_settings(seed))}"


class DetectionStore:
    """Append-only chunks of ``[key, [[lang, prob], ...]]`` lines in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def _chunks(self) -> list[Path]:
        return sorted(self.folder.glob("chunk-*.jsonl"))

    def load(self) -> dict[str, Detection]:
        """Every detection written so far (a line that does not parse is skipped)."""
        out: dict[str, Detection] = {}
        for path in self._chunks():
            with path.open(encoding="utf-8") as f:
                for line in f:
                    try:
                        key, found = json.loads(line)
                        out[str(key)] = [(str(lang), float(prob)) for lang, prob in found]
                    except (ValueError, TypeError):
                        continue
        if out:
            log.info("language detections: %d cached in %s", len(out), self.folder)
        return out

    def write(self, detections: Iterable[tuple[str, Detection]]) -> None:
        """One new chunk file (whole or not at all)."""
        lines = [json.dumps([key, found]) for key, found in detections]  # ASCII: any string round-trips
        if not lines:
            return
        chunks = self._chunks()
        n = int(chunks[-1].stem.split("-")[1]) + 1 if chunks else 0
        path = self.folder / f"chunk-{n:06d}.jsonl"
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
        os.replace(tmp, path)
