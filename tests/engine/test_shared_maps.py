"""Several engine processes on one bundle share its files: a bundle above ``EXACT_ROWS`` is served from
memory-mapped vectors, items and indexes, so each process's private memory stays what it is on a small
bundle, however many vectors the bundle holds.

The large bundle is 30,000 posts made from the small bundle's real vectors by
``scripts/make_scale_bundle.py`` (the tool the scale benchmark uses), so the trainer's real outputs are
what gets replicated.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from space import bundle
from tests.conftest import ROOT
from tests.engine.helpers import engine_process, get_json

pytestmark = pytest.mark.slow

PHOTOS = 30_000
SHARED = ("images.npy", "captions.npy", "items/records.jsonl", "images.usearch", "search.usearch",
          "hashtags.usearch", "search-es.usearch")


@pytest.fixture(scope="module")
def big_models(tmp_path_factory: pytest.TempPathFactory, small_bundle: Path) -> Path:
    models = tmp_path_factory.mktemp("big") / "models"
    script = ROOT / "scripts" / "make_scale_bundle.py"
    subprocess.run([sys.executable, str(script), "--source", str(small_bundle),
                    "--models", str(models), "--photos", str(PHOTOS), "--words", "0"],
                   check=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True)
    return models


@contextmanager
def engine(models: Path) -> Iterator[tuple[int, str]]:
    """A ``python -m engine`` process serving ``models``, warmed with a few queries: (pid, url)."""
    with engine_process(models) as (proc, url):
        first = get_json(url + "/v1/images?q=dog&k=1")["images"][0]["id"]
        for text in ("dog", "man bike", "beach water", "girl red"):
            for path in (f"/v1/images?q={quote(text)}&k=20", f"/v1/images?q={quote(text)}&k=20&lang=es",
                         f"/v1/related?q={quote(text)}", f"/v1/similar/{quote(first)}?k=20"):
                get_json(url + path)
        yield proc.pid, url


def _mapped(pid: int, folder: Path) -> dict[str, tuple[str, str]]:
    """The files below ``folder`` that process ``pid`` maps: relative name → (device, inode)."""
    out = {}
    with open(f"/proc/{pid}/maps", encoding="utf-8") as f:
        for line in f:
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].strip().startswith(str(folder) + "/"):
                out[Path(parts[5].strip()).relative_to(folder).as_posix()] = (parts[3], parts[4])
    return out


def _private_mib(pid: int) -> float:
    """The process's anonymous resident memory (what no other process shares), MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no RssAnon")


def test_two_engine_processes_map_the_same_files(big_models: Path, small_bundle_models: Path) -> None:
    big = bundle.active_path(big_models)
    vectors_mib = sum((big / name).stat().st_size for name in ("images.npy", "captions.npy")) / 2**20
    with ExitStack() as stack:
        small_pid, _ = stack.enter_context(engine(small_bundle_models))
        small_private = _private_mib(small_pid)
        (a, url_a), (b, _) = stack.enter_context(engine(big_models)), stack.enter_context(engine(big_models))
        assert get_json(url_a + "/v1/stats")["n_images"] == PHOTOS
        maps_a, maps_b = _mapped(a, big), _mapped(b, big)
        assert set(SHARED) <= set(maps_a), sorted(maps_a)
        assert {name: maps_b.get(name) for name in SHARED} == {name: maps_a[name] for name in SHARED}
        for pid in (a, b):
            # 300 posts or 30,000: the same private memory (the vectors alone are vectors_mib).
            grown = _private_mib(pid) - small_private
            assert grown < vectors_mib / 2, (grown, vectors_mib)
