"""Running the app: one process, or several engine processes on one port under a small supervisor.

One event loop answers about 2,000 uncached text queries a second on a core; more processes use more
cores. Each process is a whole engine (its own model, pools, in-process cache tier, ONNX session) bound
to the same port with ``SO_REUSEPORT``, so the kernel spreads connections over them; Redis, when
configured, is the cache they share, and bundle switches reach them all (the pub/sub bus, or the ACTIVE
poll without Redis). The supervisor holds the port from the start (so a port already taken fails at once,
and port 0 picks one port for all), forwards SIGHUP (reload) and SIGTERM/SIGINT (graceful stop) to the
processes, restarts one that dies, and gives up (exit 1) when they keep dying at start-up. Their
Prometheus metrics are summed across processes (``prometheus_client`` multiprocess mode): ``/metrics``
on any of them shows the whole service.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import replace
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

from aiohttp import web
from prometheus_client import multiprocess

from engine.app import create_app
from engine.settings import Settings
from space.logs import configure_logging

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A process that exits within this many seconds of its start counts as a failed start.
EARLY_EXIT_S = 10.0
# This many failed starts in a row and the supervisor stops trying.
MAX_FAILED_STARTS = 5


def _event_loop() -> Any:
    """A uvloop event loop when uvloop is installed (~5-10 % more requests per core), else None (asyncio)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop()


def run_single(settings: Settings, reuse_port: bool = False) -> None:
    """Serve in this process until SIGINT/SIGTERM (graceful: requests in flight finish)."""
    # handler_cancellation: a request whose client disconnected stops waiting for a worker.
    web.run_app(create_app(settings), host=settings.host, port=settings.port, access_log=None,
                shutdown_timeout=10.0, handler_cancellation=True, reuse_port=reuse_port or None,
                loop=_event_loop(), print=None)


def _child(settings: Settings, slot: int, level: str) -> None:
    """Entry point of one engine process (spawned: a fresh interpreter)."""
    fmt = f"%(asctime)s %(levelname)s engine[{slot}] %(name)s: %(message)s"
    configure_logging(settings.secrets(), level, fmt=fmt)
    run_single(settings, reuse_port=True)


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) ``host:port`` with SO_REUSEPORT: a taken port fails here, port 0 picks one.

    Only listening sockets receive connections, so holding this one costs nothing.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    """Starts ``processes`` engine processes on one port and keeps them running until told to stop."""

    def __init__(self, settings: Settings, processes: int) -> None:
        self.settings = settings
        self.processes = processes
        self.ctx = mp.get_context("spawn")
        self.children: dict[int, tuple[BaseProcess, float]] = {}  # slot → (process, start time)
        self.stopping = False
        self.failed_starts = 0
        self.level = logging.getLevelName(logging.getLogger().getEffectiveLevel())

    def _start(self, slot: int) -> None:
        proc = self.ctx.Process(target=_child, args=(self.settings, slot, self.level),
                                name=f"engine-{slot}", daemon=False)
        proc.start()
        self.children[slot] = (proc, time.monotonic())
        log.info("engine process %d started (pid %s)", slot, proc.pid)

    def _signal(self, signum: int, _frame: FrameType | None = None) -> None:
        if signum == signal.SIGHUP:
            log.info("SIGHUP: every engine process reloads the active bundle")
            self._forward(signal.SIGHUP)
            return
        if not self.stopping:
            log.info("stopping %d engine processes", len(self.children))
        self.stopping = True
        self._forward(signal.SIGTERM)

    def _forward(self, signum: int) -> None:
        for proc, _ in self.children.values():
            if proc.pid is not None and proc.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    def _reap(self, slot: int) -> None:
        """A process ended: forget it (and its live gauges); restart it unless stopping or hopeless."""
        proc, started = self.children.pop(slot)
        proc.join()
        if proc.pid is not None and os.environ.get(METRICS_DIR_ENV):
            multiprocess.mark_process_dead(proc.pid)
        if self.stopping:
            return
        early = time.monotonic() - started < EARLY_EXIT_S
        self.failed_starts = self.failed_starts + 1 if early else 0
        log.warning("engine process %d (pid %s) exited with code %s%s", slot, proc.pid, proc.exitcode,
                    "" if self.failed_starts < MAX_FAILED_STARTS else ": it keeps failing, stopping")
        if self.failed_starts >= MAX_FAILED_STARTS:
            self.stopping = True
            self._forward(signal.SIGTERM)
            return
        time.sleep(min(0.5 * self.failed_starts, 5.0))
        self._start(slot)

    def run(self) -> int:
        """Start the processes and supervise until they have all stopped; the exit status."""
        handlers = {s: signal.signal(s, self._signal) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
        try:
            for slot in range(self.processes):
                self._start(slot)
            while self.children:
                sentinels = {proc.sentinel: slot for slot, (proc, _) in self.children.items()}
                for ready in mp.connection.wait(list(sentinels), timeout=1.0):
                    self._reap(sentinels[ready])  # type: ignore[index]
            return 1 if self.failed_starts >= MAX_FAILED_STARTS else 0
        finally:
            self.stopping = True
            self._forward(signal.SIGTERM)
            for proc, _ in self.children.values():
                proc.join(timeout=15)
                if proc.exitcode is None:
                    proc.kill()
            for s, h in handlers.items():
                signal.signal(s, h)


def serve(settings: Settings, processes: int = 1) -> int:
    """Serve ``settings`` with ``processes`` engine processes (1: in this process); the exit status."""
    if processes <= 1:
        run_single(settings)
        return 0
    reservation = reserve_port(settings.host, settings.port)  # a port in use: OSError, for main() to say
    port = int(reservation.getsockname()[1])
    settings = replace(settings, port=port)
    given = os.environ.get(METRICS_DIR_ENV) or None
    own_dir = given is None
    metrics_dir = given or tempfile.mkdtemp(prefix="topicspace-metrics-")
    os.environ[METRICS_DIR_ENV] = metrics_dir  # the spawned processes inherit it
    if not own_dir:  # a given directory: start from zero, as a single process would
        os.makedirs(metrics_dir, exist_ok=True)
        for name in os.listdir(metrics_dir):
            if name.endswith(".db"):
                os.unlink(os.path.join(metrics_dir, name))
    log.info("engine: %d processes on %s:%d (SO_REUSEPORT), metrics summed in %s",
             processes, settings.host, port, metrics_dir)
    try:
        return Supervisor(settings, processes).run()
    finally:
        reservation.close()
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
            os.environ.pop(METRICS_DIR_ENV, None)
