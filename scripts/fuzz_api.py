"""The slowest request found: the API fuzzer of the tests, run longer against a real engine process.

Starts ``python -m engine`` on ``--models`` (in-process cache expiring at once: every request computed),
reads its ``GET /openapi.json``, and sends every operation the systematic sweep of hostile values, headers
and bodies plus ``--examples`` random requests per operation drawn by the same hypothesis strategies as
``tests/engine/test_api_fuzz.py`` (:mod:`tests.engine.openapi_fuzz`). Prints the status counts, every 5xx,
and the slowest requests with their times (each slow one replayed, to tell a request's own cost from a
stall of the machine).

    python scripts/fuzz_api.py --models DIR [--examples 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pagetools import free_port, wait_ready  # noqa: E402

from tests.engine.openapi_fuzz import Request, operations, requests, send, sweep  # noqa: E402

TOKEN = "fuzz-admin-token"




def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--examples", type=int, default=300, help="random requests per operation")
    p.add_argument("--json", type=Path, default=None)
    a = p.parse_args(argv)
    port = free_port()
    env = {"PATH": "/usr/bin:/bin", "ENGINE_ADMIN_TOKEN": TOKEN, "PYTHONPATH": str(ROOT)}
    # --cache-ttl 0: nothing is served from the cache, so every request (and replay) is computed.
    argv = [sys.executable, "-m", "engine", "--models", str(a.models), "--port", str(port),
            "--cache-ttl", "0"]
    engine = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=ROOT)
    host = "127.0.0.1"
    timings: list[tuple[float, int, str]] = []
    statuses: Counter[int] = Counter()
    errors: list[str] = []

    def record(request: Request) -> None:
        answer = send(host, port, request)
        statuses[answer.status] += 1
        seconds = answer.seconds
        if seconds > 0.5:  # replay: the request's own cost is the least of three
            seconds = min(seconds, *(send(host, port, request).seconds for _ in range(2)))
        timings.append((seconds, answer.status, request.describe()[:300]))
        if answer.status >= 500:
            errors.append(f"{answer.status} {answer.body[:200]!r} for {request.describe()[:300]}")

    try:
        wait_ready(f"http://{host}:{port}", engine)
        spec = json.loads(send(host, port, Request("GET", "/openapi.json", [], None)).body)
        ids = json.loads(send(host, port, Request("GET", "/v1/images?q=dog&k=20", [], None)).body)["images"]
        known = [hit["id"] for hit in ids]
        started = time.monotonic()
        for op in operations(spec):
            for request in sweep(op, known, TOKEN):
                record(request)

            @settings(max_examples=a.examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(request=requests(op, known, TOKEN))
            def fuzz(request: Request) -> None:
                record(request)

            fuzz()
            print(f"{op.name}: done, {len(timings)} requests so far", flush=True)
        elapsed = time.monotonic() - started
    finally:
        engine.terminate()
        engine.wait(timeout=30)
    timings.sort(reverse=True)
    print(f"{len(timings)} requests in {elapsed:.0f} s; statuses {dict(sorted(statuses.items()))}")
    print(f"5xx: {len(errors)}")
    for line in errors[:20]:
        print("  " + line)
    print("slowest (least of three for those over 0.5 s):")
    for seconds, status, what in timings[:10]:
        print(f"  {seconds * 1000:8.1f} ms  {status}  {what}")
    if a.json:
        a.json.write_text(json.dumps({"requests": len(timings), "statuses": statuses, "errors": errors,
                                      "slowest": timings[:20]}, indent=1))
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
