"""Fixtures shared by every test package: paths to ../shared, a real redis-server, a small real bundle."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TOPICSPACE_SHARED", ROOT.parent / "shared")).resolve()


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "data" / "flickr8k").is_dir():
        pytest.fail(f"../shared not found at {SHARED} (set TOPICSPACE_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def flickr8k_dir(shared_dir: Path) -> Path:
    return shared_dir / "data" / "flickr8k"


@pytest.fixture(scope="session")
def weights_dir(shared_dir: Path) -> Path:
    return shared_dir / "weights" / "bvlc_googlenet"


@pytest.fixture(scope="session")
def multilingual_tsv(shared_dir: Path) -> Path:
    return shared_dir / "data" / "flickr8k-multilingual" / "flickr8k_multi30k_es_ca.tsv"


class RedisServer:
    """A real redis-server on a free loopback port, which a test may stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        pytest.fail("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def small_bundle_models(
    tmp_path_factory: pytest.TempPathFactory, flickr8k_dir: Path, weights_dir: Path
) -> Path:
    """A models directory holding one active bundle built from a few hundred real Flickr8k images."""
    from tests.bundle_factory import build_small_bundle

    models = tmp_path_factory.mktemp("models")
    build_small_bundle(models, flickr8k_dir, weights_dir)
    return models


@pytest.fixture(scope="session")
def seed_bundle(tmp_path_factory: pytest.TempPathFactory, flickr8k_dir: Path, weights_dir: Path) -> Path:
    """A centred bundle of the seed recipe on the same few hundred images (one short epoch)."""
    from tests.bundle_factory import SEED_ARGS, build_small_bundle

    models = tmp_path_factory.mktemp("seed-models")
    return build_small_bundle(models, flickr8k_dir, weights_dir, extra=SEED_ARGS)


@pytest.fixture(scope="session")
def small_bundle(small_bundle_models: Path) -> Path:
    """The active bundle directory of :func:`small_bundle_models`."""
    from space.bundle import active_path

    return active_path(small_bundle_models)
