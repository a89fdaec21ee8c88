"""Engine test helpers: settings, publishing a second bundle, small images, an engine process."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from engine.settings import Settings
from space import bundle
from tests.conftest import ROOT, free_port
from tests.waiting import until_sync

TOKEN = "test-admin-token"


def make_settings(models: Path, **overrides: object) -> Settings:
    """Engine settings for tests: fast ACTIVE poll, no SIGHUP handler, an admin token."""
    base = Settings(models_dir=models, admin_token=TOKEN, poll_s=0.2, redis_retry_s=0.5)
    return replace(base, **overrides)  # type: ignore[arg-type]


def publish_copy(
    models: Path,
    source: Path,
    *,
    activate_it: bool = True,
    with_indexes: bool = True,
    image_vectors: np.ndarray | None = None,
    edit: Callable[[Path], None] | None = None,
) -> str:
    """Publish a copy of bundle ``source`` as a new version under ``models``; return the version.

    ``with_indexes=False`` leaves the usearch files out (the engine then builds them in memory);
    ``image_vectors`` replaces ``images.npy``; ``edit`` may change the staged folder before it is
    hashed and published (e.g. rewrite ``images.json``).
    """
    from space.vectorindex import build_bundle_indexes

    manifest = bundle.read_manifest(source)
    with bundle.staging(models) as tmp:
        for p in source.iterdir():
            if p.name == bundle.MANIFEST or (p.suffix == ".usearch" and not with_indexes):
                continue
            if not with_indexes and p.name in (bundle.IMAGE_INDEX, bundle.WORD_INDEX):
                continue  # the trainer's bundles ship indexes: leave them out to test the in-memory path
            if p.is_dir():
                shutil.copytree(p, tmp / p.name)
            else:
                shutil.copy2(p, tmp / p.name)
        if image_vectors is not None:
            np.save(tmp / bundle.IMAGE_VECTORS, image_vectors.astype(np.float32))
        if edit is not None:
            edit(tmp)
        if with_indexes:
            build_bundle_indexes(tmp)
        fields: dict[str, object] = {
            k: manifest[k] for k in ("config", "metrics", "filter_report", "corpus") if k in manifest
        }
        final = bundle.publish(tmp, models, fields, activate_it=activate_it)
    return final.name


def png_bytes(size: tuple[int, int] = (64, 48)) -> bytes:
    """A small valid PNG."""
    out = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(out, format="PNG")
    return out.getvalue()


def caption_vectors(source: Path) -> np.ndarray:
    """Each image's caption vector (the regression target): an "oracle encoder" for ranking tests."""
    import json

    from space.textspace import TextSpace
    from space.tokenize import tokenize

    space = TextSpace.load(source)
    items = json.loads((source / bundle.IMAGE_META).read_text(encoding="utf-8"))["items"]
    rows = []
    for item in items:
        vec, _ = space.embed_tokens(tokenize(" ".join(item.get("captions") or [item["caption"]])))
        rows.append(np.zeros(space.dim, dtype=np.float32) if vec is None else vec)
    return np.stack(rows)


def get_json(url: str, timeout: float = 10) -> dict[str, Any]:
    """GET ``url`` from a running engine process; its JSON."""
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return,unused-ignore]


def post_admin(url: str, timeout: float = 30) -> dict[str, Any]:
    """POST to an admin endpoint of a running engine process with the test token; its JSON."""
    req = urllib.request.Request(url, method="POST", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())  # type: ignore[no-any-return,unused-ignore]


def stop_and_print(proc: subprocess.Popen[str], timeout: float = 30, tail: int = 4000) -> None:
    """SIGTERM a running engine process (killed if it does not stop in time); print its log's tail."""
    if proc.poll() is None:
        proc.terminate()
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    print((out or "")[-tail:])


@contextmanager
def engine_process(models: Path, **env_extra: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m engine`` serving ``models`` on a free port, with this environment's ``ENGINE_*`` and
    ``REDIS_URL`` left out (its defaults, an in-process cache) and ``env_extra`` added; yields (the process,
    its base URL) once /readyz says ready, then stops it and prints its log's tail."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_") and k != "REDIS_URL"}
    env.update(PYTHONPATH=str(ROOT), **env_extra)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "--models", str(models), "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, "the engine exited"
        try:
            return get_json(url + "/readyz", timeout=2).get("status") == "ready"
        except OSError:
            return False

    try:
        until_sync(ready, f"the engine to serve {models}", every=0.1)
        yield proc, url
    finally:
        stop_and_print(proc)


def spy_searches(monkeypatch: Any) -> list[tuple[Any, int]]:
    """Every call of ``space.vectorindex.search_batch`` from now on, in order: (the index searched, its k)."""
    from space import vectorindex

    calls: list[tuple[Any, int]] = []
    real = vectorindex.search_batch

    def spy(index: Any, queries: Any, k: int, *args: Any, **kwargs: Any) -> Any:
        calls.append((index, k))
        return real(index, queries, k, *args, **kwargs)

    monkeypatch.setattr(vectorindex, "search_batch", spy)
    return calls
