"""Redis memory after a flood of distinct cached queries: what a client sending ever-new queries costs.

Starts a redis-server configured as docker-compose.yml's ``redis-cache`` service (its ``--maxmemory`` and
``--maxmemory-policy``, no persistence; ``--maxmemory 0`` for an unbounded one, as before issue 28) and
``python -m engine`` with ``ENGINE_CACHE_REDIS_URL`` pointing at it, then sends ``--queries`` distinct
``/v1/images`` and ``/v1/related`` requests (word pairs of the bundle's vocabulary, ``k`` 1–100,
``offset`` 0–1000, a made-up ``lang`` now and then) from ``--concurrency`` connections. Reports Redis's
``used_memory``, keys and evictions, the requests' statuses, and the engine's RSS.

    python scripts/bench_cache_flood.py --models DIR [--queries 100000] [--maxmemory 256mb|0] \
        [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import aiohttp
import redis
import yaml
from pagetools import free_port, wait_ready

ROOT = Path(__file__).resolve().parents[1]




def compose_cache_flags() -> tuple[str, str]:
    """``--maxmemory`` and ``--maxmemory-policy`` of docker-compose.yml's redis-cache (defaults applied)."""
    command = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["redis-cache"]["command"]
    maxmemory = command[command.index("--maxmemory") + 1]
    default = maxmemory.split(":-", 1)[1].rstrip("}") if ":-" in maxmemory else maxmemory
    return default, command[command.index("--maxmemory-policy") + 1]


def _info(client: redis.Redis, section: str) -> dict[str, Any]:
    return cast(dict[str, Any], client.info(section))


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def flood(base: str, words: list[str], n: int, concurrency: int, seed: int) -> Counter[int]:
    rng = random.Random(seed)
    statuses: Counter[int] = Counter()
    seen: set[tuple[Any, ...]] = set()
    queue: asyncio.Queue[tuple[str, dict[str, str]] | None] = asyncio.Queue(maxsize=concurrency * 4)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (item := await queue.get()) is not None:
            path, params = item
            try:
                async with session.get(base + path, params=params) as r:
                    await r.read()
                    statuses[r.status] += 1
            except aiohttp.ClientError:
                statuses[-1] += 1

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        workers = [asyncio.create_task(worker(session)) for _ in range(concurrency)]
        sent = 0
        while sent < n:
            endpoint = "/v1/images" if rng.random() < 0.7 else "/v1/related"
            q = f"{rng.choice(words)} {rng.choice(words)}"
            params = {"q": q, "k": str(rng.randint(1, 100))}
            if endpoint == "/v1/images":
                params["offset"] = str(rng.randint(0, 1000))
                if rng.random() < 0.2:
                    params["lang"] = rng.choice(["en", "xx", "zz", "qq", "pt-br"])
            key = (endpoint, *sorted(params.items()))
            if key in seen:
                continue
            seen.add(key)
            await queue.put((endpoint, params))
            sent += 1
            if sent % 10_000 == 0:
                print(f"  {sent:,} sent", flush=True)
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    return statuses


def main(argv: list[str] | None = None) -> int:
    default_max, policy = compose_cache_flags()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--queries", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--maxmemory", default=default_max,
                   help=f"redis maxmemory (compose: {default_max}; 0: none)")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="cache-flood-"))
    rport, eport = free_port(), free_port()
    server = shutil.which("redis-server") or "redis-server"
    redis_proc = subprocess.Popen([server, "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(workdir),
                                   "--save", "", "--appendonly", "no", "--maxmemory", a.maxmemory,
                                   "--maxmemory-policy", policy], stdout=subprocess.DEVNULL)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "ENGINE_CACHE_REDIS_URL": f"redis://127.0.0.1:{rport}/0"}
    argv = [sys.executable, "-m", "engine", "--models", str(a.models), "--port", str(eport)]
    engine = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=rport)
    try:
        wait_ready(f"http://127.0.0.1:{eport}", engine)
        version = (a.models / "ACTIVE").read_text().strip()
        words = json.loads((a.models / version / "vocab.json").read_text())["words"]
        before = int(_info(client, "memory")["used_memory"])
        started = time.monotonic()
        statuses = asyncio.run(flood(f"http://127.0.0.1:{eport}", words, a.queries, a.concurrency, seed=28))
        elapsed = time.monotonic() - started
        time.sleep(1.0)  # the engine's last batched SETs
        memory = _info(client, "memory")
        stats = _info(client, "stats")
        result = {
            "queries": a.queries, "seconds": round(elapsed, 1), "statuses": dict(statuses),
            "maxmemory": a.maxmemory, "policy": policy,
            "used_memory_mb": round(int(memory["used_memory"]) / 2**20, 1),
            "used_memory_before_mb": round(before / 2**20, 1),
            "peak_memory_mb": round(int(memory["used_memory_peak"]) / 2**20, 1),
            "keys": int(cast(int, client.dbsize())), "evicted_keys": int(stats["evicted_keys"]),
            "engine_rss_mb": round(_rss_mb(engine.pid), 1),
        }
    finally:
        client.close()
        engine.terminate()
        engine.wait(timeout=30)
        redis_proc.terminate()
        redis_proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=1))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
