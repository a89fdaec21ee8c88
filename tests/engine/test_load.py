"""Default settings under load: 64 concurrent clients of mixed requests get no errors.

Issue 19, item 7: the CI-sized run of ``scripts/load_test.py`` (3,000 requests: text, photos, image files,
stats) at 64 connections against ``python -m engine`` with its default settings, a real ``redis-server``
and the small test bundle. Only errors are asserted; the latency figures it prints belong in
docs/benchmarks.md (Load test), not in an assertion.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

REQUESTS = 3000
CLIENTS = 64


@pytest.mark.slow
def test_64_clients_of_mixed_requests_get_no_errors_with_default_settings(
    small_bundle_models: Path, tmp_path: Path
) -> None:
    if shutil.which("redis-server") is None:
        pytest.fail("redis-server is not installed (apt-get install -y redis-server)")
    # The engine's defaults: no ENGINE_* variable from the environment may tune it for the test.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_") and k != "REDIS_URL"}
    out = tmp_path / "load.json"
    proc = subprocess.run(
        [sys.executable, "scripts/load_test.py", "--models", str(small_bundle_models),
         "--requests", str(REQUESTS), "--concurrency", str(CLIENTS), "--queue-limit", "0",
         "--warmup", "300", "--time-limit", "480", "--json", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.is_file(), f"the load test wrote no report (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    report = json.loads(out.read_text())
    figures = {name: (r["count"], r["p50_ms"], r["p99_ms"]) for name, r in report["endpoints"].items()}
    print(f"\n{REQUESTS} requests, {CLIENTS} clients, engine defaults: {report['rps']} req/s, "
          f"RSS {report['rss_mb']}, (count, p50 ms, p99 ms) {figures}")
    assert report["queue_limit"] == "engine defaults"
    assert report["errors"] == 0 and report["warmup_errors"] == 0, report["error_samples"]
    assert report["endpoints"]["overall"]["count"] == REQUESTS
    assert report["engine_alive"]
