"""Load-test the engine with a mixed workload: errors (must be 0), p50/p99 per endpoint, RSS before/after.

Usage: ``python scripts/load_test.py --models DIR [--requests 10000] [--concurrency 64] [--time-limit 900]``.

Starts a real ``redis-server`` on a free loopback port and the engine as a subprocess
(``python -m engine --models DIR --port P`` with ``REDIS_URL`` set), then sends a fixed, seeded mix of
requests from ``--concurrency`` aiohttp clients on loopback: ``/v1/related`` and ``/v1/images`` with
1-2 words of the bundle's vocabulary (some negated), ``/v1/hashtags`` with real photos of the bundle,
``/v1/stats`` and ``/v1/images/{id}`` (file or thumbnail). Every answer must be a 200. The engine's
VmRSS is read from ``/proc/<pid>/status`` after start, after a warm-up of ``--warmup`` requests (ONNX
Runtime arenas and caches filled) and after the run; the target is the run's growth within 10% of the
warm RSS. Exit status 0 only when there were no errors and the RSS target was met. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import numpy as np
from pagetools import free_port

log = logging.getLogger(__name__)

# The mix, as shares of the requests (seeded, so every run sends the same sequence).
MIX = {"related": 0.35, "images": 0.30, "hashtags": 0.10, "stats": 0.05, "image_file": 0.20}
RSS_TARGET = 0.10


@dataclass(frozen=True)
class Config:
    """What the load test runs against and how hard."""

    models: Path
    requests: int
    concurrency: int
    warmup: int
    time_limit_s: float
    seed: int
    queue_limit: int
    redis_server: str
    json_out: Path | None


@dataclass(frozen=True)
class Request:
    """One planned request."""

    endpoint: str
    method: str
    path: str
    params: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None




def wait_port(port: int, timeout_s: float) -> None:
    """Wait until something accepts connections on ``port``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout_s:.0f}s")


def rss_mb(pid: int) -> float:
    """VmRSS of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def active_bundle(models: Path) -> Path:
    """The bundle directory named by ``models/ACTIVE``."""
    return models / (models / "ACTIVE").read_text(encoding="utf-8").strip()


def plan(bundle_dir: Path, n: int, seed: int) -> list[Request]:
    """``n`` requests drawn from :data:`MIX` over the bundle's vocabulary, photos and ids."""
    rng = np.random.default_rng(seed)
    vocab = json.loads((bundle_dir / "vocab.json").read_text(encoding="utf-8"))
    by_count = sorted(zip(vocab["words"], vocab["counts"], strict=True), key=lambda x: -x[1])
    words = [w for w, _ in by_count][:400]
    items = json.loads((bundle_dir / "images.json").read_text(encoding="utf-8"))["items"]
    ids = sorted({str(it["post_id"]) for it in items if it.get("post_id")})  # served under the post id
    photos = [Path(it["path"]).read_bytes() for it in items[:60]]
    kinds = list(MIX)
    picks = rng.choice(len(kinds), size=n, p=np.array([MIX[k] for k in kinds]))
    out: list[Request] = []
    for pick in picks.tolist():
        kind = kinds[pick]
        if kind in ("related", "images"):
            # Zipf-like reuse: common words are asked often (cache hits), the tail rarely (misses).
            n_words = int(rng.integers(1, 3))
            chosen = [words[min(int(rng.zipf(1.3)) - 1, len(words) - 1)] for _ in range(n_words)]
            if kind == "images" and rng.random() < 0.2:
                chosen.append("-" + words[int(rng.integers(len(words)))])
            query = (("q", " ".join(chosen)), ("k", str(int(rng.choice([5, 10, 20])))))
            out.append(Request(kind, "GET", f"/v1/{kind}", query))
        elif kind == "hashtags":
            photo = photos[int(rng.integers(len(photos)))]
            out.append(Request(kind, "POST", "/v1/hashtags", (("k", "10"),), photo))
        elif kind == "stats":
            out.append(Request(kind, "GET", "/v1/stats"))
        else:
            image_id = ids[int(rng.integers(len(ids)))]
            size: tuple[tuple[str, str], ...] = (("size", "128"),) if rng.random() < 0.5 else ()
            out.append(Request(kind, "GET", f"/v1/images/{image_id}", size))
    return out


@contextmanager
def services(cfg: Config, workdir: Path) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """A redis-server and the engine, both on free loopback ports; stopped (and reaped) on exit."""
    redis_port, engine_port = free_port(), free_port()
    redis = subprocess.Popen(
        [cfg.redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    engine: subprocess.Popen[bytes] | None = None
    try:
        wait_port(redis_port, 10)
        # The engine answers 503 busy at once when a pool's queue is full (64 waiting requests by default):
        # by default the queues are sized to the client count, so a 503 here means something broke.
        queue = ["--queue-limit", str(cfg.queue_limit), "--image-queue-limit", str(cfg.queue_limit)]
        queue = queue if cfg.queue_limit > 0 else []
        env = {**os.environ, "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "LOG_LEVEL": "WARNING"}
        engine = subprocess.Popen(
            [sys.executable, "-m", "engine", "--models", str(cfg.models), "--port", str(engine_port), *queue],
            env=env, stdout=(workdir / "engine.log").open("wb"), stderr=subprocess.STDOUT,
        )
        wait_port(engine_port, 120)
        yield engine_port, engine
    finally:
        for proc in (engine, redis):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)


@dataclass(frozen=True)
class RunResult:
    """Latencies (ms) per endpoint, the errors seen, and the wall time."""

    latencies: dict[str, list[float]]
    errors: list[str]
    elapsed_s: float


async def run(base: str, requests: list[Request], concurrency: int, deadline: float) -> RunResult:
    """Send ``requests`` from ``concurrency`` clients; per-endpoint latencies (ms) and the errors seen."""
    latencies: dict[str, list[float]] = {k: [] for k in MIX}
    errors: list[str] = []
    queue = iter(requests)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base, timeout=timeout, connector=connector) as session:

        async def client() -> None:
            for req in queue:  # one shared iterator: each request is sent exactly once
                if time.monotonic() > deadline:
                    errors.append("time limit reached")
                    return
                t0 = time.perf_counter()
                try:
                    params = list(req.params)
                    async with session.request(req.method, req.path, params=params, data=req.body) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors.append(f"{req.endpoint}: {type(exc).__name__}: {exc}")
                    continue
                latencies[req.endpoint].append((time.perf_counter() - t0) * 1000)
                if status != 200:
                    errors.append(f"{req.endpoint} {req.path} {req.params}: HTTP {status}")

        t0 = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    return RunResult(latencies, errors, elapsed)


def summary(result: RunResult) -> dict[str, dict[str, float]]:
    """count, p50 and p99 (ms) per endpoint and overall."""
    lat = result.latencies
    rows = {**lat, "overall": [x for v in lat.values() for x in v]}
    out = {}
    for name, xs in rows.items():
        arr = np.array(xs) if xs else np.zeros(1)
        out[name] = {"count": len(xs), "p50_ms": round(float(np.percentile(arr, 50)), 2),
                     "p99_ms": round(float(np.percentile(arr, 99)), 2), "max_ms": round(float(arr.max()), 2)}
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True, help="models directory holding ACTIVE")
    p.add_argument("--requests", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--warmup", type=int, default=500, help="requests sent before the 'before' RSS")
    p.add_argument("--time-limit", type=float, default=900.0, help="seconds for the whole run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--queue-limit", type=int, default=None,
                   help="engine queue limits (default: --concurrency; 0: engine defaults)")
    p.add_argument("--redis-server", default=shutil.which("redis-server") or "redis-server")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cfg = Config(a.models.resolve(), a.requests, a.concurrency, a.warmup, a.time_limit, a.seed,
                 a.concurrency if a.queue_limit is None else a.queue_limit, a.redis_server, a.json)
    if not (cfg.models / "ACTIVE").is_file():
        log.error("%s has no ACTIVE bundle", cfg.models)
        return 2
    bundle_dir = active_bundle(cfg.models)
    warm = plan(bundle_dir, cfg.warmup, cfg.seed + 1)
    work = plan(bundle_dir, cfg.requests, cfg.seed)
    deadline = time.monotonic() + cfg.time_limit_s
    with tempfile.TemporaryDirectory(prefix="load-test-") as tmp, services(cfg, Path(tmp)) as (port, engine):
        base = f"http://127.0.0.1:{port}"
        rss_start = rss_mb(engine.pid)
        warm_result = asyncio.run(run(base, warm, cfg.concurrency, deadline))
        rss_before = rss_mb(engine.pid)
        log.info("warm-up: %d requests, %d errors; RSS %.0f -> %.0f MB", len(warm),
                 len(warm_result.errors), rss_start, rss_before)
        result = asyncio.run(run(base, work, cfg.concurrency, deadline))
        rss_after = rss_mb(engine.pid)
        engine_alive = engine.poll() is None
    errors = result.errors
    growth = (rss_after - rss_before) / rss_before
    report = {
        "requests": cfg.requests,
        "concurrency": cfg.concurrency,
        "elapsed_s": round(result.elapsed_s, 2),
        "rps": round(cfg.requests / result.elapsed_s, 1),
        "queue_limit": cfg.queue_limit or "engine defaults",
        "errors": len(errors),
        "busy_503": sum(": HTTP 503" in e for e in errors),
        "error_samples": errors[:10],
        "warmup_errors": len(warm_result.errors),
        "endpoints": summary(result),
        "rss_mb": {"start": round(rss_start, 1), "after_warmup": round(rss_before, 1),
                   "after": round(rss_after, 1), "growth_pct": round(100 * growth, 2)},
        "engine_alive": engine_alive,
    }
    print(json.dumps(report, indent=2))
    if cfg.json_out:
        cfg.json_out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    ok = not errors and engine_alive and abs(growth) <= RSS_TARGET
    print(f"{'PASS' if ok else 'FAIL'}: {len(errors)} errors, RSS {rss_before:.0f} -> {rss_after:.0f} MB "
          f"({100 * growth:+.1f}%, target within {100 * RSS_TARGET:.0f}%)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
