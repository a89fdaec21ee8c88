"""Engine at scale: one engine process, one connection, uncached: latency, recall, start-up and memory.

Usage (docs/benchmarks.md, "Engine at scale"):

    python scripts/bench_engine_scale.py BUNDLE [--baseline SRC] [--swap-to VERSION] [--requests 300] \\
        [--json out.json]

``BUNDLE`` is a published bundle folder; its models folder's ACTIVE must name it. For each source tree
(this one, and with ``--baseline`` another, e.g. ``/work/main``: its ``engine`` package run on the same
bundle; both engines run at once and are asked in turn, request by request, so that both meet the same
background load on a shared machine):

- start-up: ``python -m engine`` spawned until ``/readyz`` answers 200, the median of ``--starts`` starts
  of each tree in turn (``first_start_s``: this tree's first start after the bundle's verification stamp
  was removed);
- latency, once the engine is idle after its start (its spelling index built: a first bundle is served
  before it), one keep-alive connection, every request a new cache key (random pairs of the vocabulary's
  5,000 most frequent words, ``k`` 10), after a warm-up of other queries: ``/v1/related``,
  ``/v1/images``, ``/v1/images`` with ``lang`` (each of the bundle's languages in turn),
  ``/v1/similar/{id}`` (a corpus photo's neighbours) and ``/v1/hashtags`` (a real photo, bytes varied so
  no two share a key: decoding and the encoder included); p50 and p90, and the engine's CPU time per
  request (user + system, from ``/proc``: less swayed by other jobs on a shared machine than a latency);
- in-process (a child process of the tree): the hashtags answer alone, given a photo's vector
  (``engine.service.hashtags``: excluding the decoder and the encoder), and the encoder alone;
- memory of the engine process after the latency runs (``/proc``: RSS, its anonymous part — what the
  process holds beyond shared file maps — and PSS), and of two engine processes on one bundle (each warmed
  with the same queries; the sum of their PSS against the RSS of one alone);
- with ``--baseline``: whether the two trees' answers to the same requests are byte-identical.

This tree only: recall@10 of each answer ranked through an index against an exact ranking of the same
rows (related words, images, images per language, similar images, the hashtags' neighbours and the
hashtags themselves), and with ``--swap-to`` a hot swap (``POST /v1/admin/reload?version=``) sampled
every 20 ms: the peak RSS and PSS during the swap against the steady state before it.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pagetools import free_port

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-admin-token"
K = 10




def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory(pid: int) -> dict[str, float]:
    """A process's memory in MiB: RSS, its anonymous and file-backed parts, and PSS."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                out[key] = int(value.split()[0]) / 1024
    with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Pss", "Private_Clean", "Private_Dirty", "Shared_Clean"):
                out[key] = int(value.split()[0]) / 1024
    return {k: round(v, 1) for k, v in out.items()}


@dataclass
class Engine:
    """One ``python -m engine`` of a source tree on a models folder."""

    tree: Path
    models: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    started_s: float = 0.0

    def start(self, timeout: float = 600.0) -> float:
        """Spawn it and wait for ``/readyz`` 200; return the seconds that took."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGINE_") and k != "REDIS_URL"}
        env.update(PYTHONPATH=str(self.tree), ENGINE_ADMIN_TOKEN=TOKEN, ENGINE_PROCESSES="1")
        began = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "engine", "--models", str(self.models), "--port", str(self.port)],
            cwd=self.tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"the engine of {self.tree} exited with {self.proc.returncode}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
                conn.request("GET", "/readyz")
                if conn.getresponse().status == 200:
                    self.started_s = time.perf_counter() - began
                    return self.started_s
            except OSError:
                pass
            time.sleep(0.01)
        raise SystemExit(f"the engine of {self.tree} was not ready in {timeout} s")

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until the process is idle: a first bundle is served before its spelling index is built
        (built right after, off the loop), and requests measured meanwhile would share the CPU with it."""
        deadline = time.monotonic() + timeout
        last = cpu_seconds(self.pid)
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = cpu_seconds(self.pid)
            if now - last < 0.05:
                return
            last = now

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


@contextlib.contextmanager
def running(tree: Path, models: Path, settle: bool = True) -> Iterator[Engine]:
    engine = Engine(tree, models)
    try:
        engine.start()
        if settle:
            engine.settle()
        yield engine
    finally:
        engine.stop()


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
        began = time.perf_counter()
        self.conn.request(method, path, body=body, headers=headers or {})
        response = self.conn.getresponse()
        data = response.read()
        return response.status, data, (time.perf_counter() - began) * 1000


@dataclass(frozen=True)
class Workload:
    """The requests of one run: the same for every tree."""

    words: list[str]
    langs: list[str]
    ids: list[str]
    photos: list[Path]
    seed: int

    def text(self, n: int, salt: int) -> list[str]:
        rng = np.random.default_rng(self.seed * 1000 + salt)
        picks = rng.integers(0, len(self.words), (n, 2))
        return [f"{self.words[a]} {self.words[b]}" for a, b in picks]

    def requests(self, kind: str, n: int, salt: int) -> list[tuple[str, str, bytes | None]]:
        """(method, path, body) of ``n`` requests of ``kind``, none repeating another run's key."""
        q = urllib.parse.quote
        if kind == "related":
            return [("GET", f"/v1/related?q={q(t)}&k={K}", None) for t in self.text(n, salt)]
        if kind == "images":
            return [("GET", f"/v1/images?q={q(t)}&k={K}", None) for t in self.text(n, salt)]
        if kind == "images_lang":
            return [("GET", f"/v1/images?q={q(t)}&k={K}&lang={self.langs[i % len(self.langs)]}", None)
                    for i, t in enumerate(self.text(n, salt))]
        if kind == "similar_id":
            rng = np.random.default_rng(self.seed * 1000 + salt)
            return [("GET", f"/v1/similar/{q(self.ids[i], safe='')}?k={K}", None)
                    for i in rng.integers(0, len(self.ids), n)]
        if kind == "hashtags":
            out: list[tuple[str, str, bytes | None]] = []
            for i in range(n):
                data = self.photos[i % len(self.photos)].read_bytes() + f"salt{salt}:{i}".encode()
                out.append(("POST", f"/v1/hashtags?k={K}", data))
            return out
        raise ValueError(kind)


KINDS = ("related", "images", "images_lang", "similar_id", "hashtags")


def latency(engine: Engine, work: Workload, n: int, salt: int) -> dict[str, dict[str, float]]:
    """p50/p90 in ms of each kind of request to one engine (:func:`interleaved` with one engine)."""
    return interleaved({"one": engine}, work, n, salt)["one"]


def interleaved(engines: dict[str, Engine], work: Workload, n: int, salt: int) -> dict[str, dict[str, Any]]:
    """p50/p90 in ms of each kind of request, one connection per engine, the engines asked in turn.

    Request i goes to every engine before request i + 1 goes to any (the order rotating), so on a shared
    machine each engine meets the same background load; each engine first answers a warm-up of other keys.
    """
    clients = {name: Client(engine.port) for name, engine in engines.items()}
    names = list(engines)
    out: dict[str, dict[str, Any]] = {name: {} for name in names}
    for j, kind in enumerate(KINDS):
        count = max(20, n // 4) if kind == "hashtags" else n
        for client in clients.values():
            for method, path, body in work.requests(kind, 20, salt + 500 + j):  # warm-up: other keys
                client.call(method, path, body)
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu = {name: cpu_seconds(engine.pid) for name, engine in engines.items()}
        for i, (method, path, body) in enumerate(work.requests(kind, count, salt + j)):
            headers = {"Content-Type": "application/octet-stream"} if body else None
            for name in names[i % len(names):] + names[:i % len(names)]:
                status, _, ms = clients[name].call(method, path, body, headers)
                if status != 200:
                    raise SystemExit(f"{name}: {path[:80]} answered {status}")
                times[name].append(ms)
        for name in names:
            used = cpu_seconds(engines[name].pid) - cpu[name]
            out[name][kind] = {"p50_ms": round(statistics.median(times[name]), 3),
                               "p90_ms": round(float(np.percentile(times[name], 90)), 3), "n": count,
                               "cpu_ms": round(1000 * used / count, 3)}
    return out


def bodies(engine: Engine, work: Workload, n: int) -> list[bytes]:
    """The answers to a fixed set of requests (for comparing two trees)."""
    client = Client(engine.port)
    out = []
    q = urllib.parse.quote
    rng = np.random.default_rng(7)
    for i, text in enumerate(work.text(n, 99)):
        k, offset = int(rng.integers(1, 60)), int(rng.integers(0, 40))
        for path in (f"/v1/related?q={q(text)}&k={k}", f"/v1/images?q={q(text)}&k={k}&offset={offset}",
                     f"/v1/images?q={q(text)}&k={k}&lang={work.langs[i % len(work.langs)]}",
                     f"/v1/similar/{q(work.ids[i % len(work.ids)], safe='')}?k={k}"):
            out.append(client.call("GET", path)[1])
    for photo in work.photos[:10]:
        out.append(client.call("POST", f"/v1/hashtags?k={K}", photo.read_bytes(),
                               {"Content-Type": "application/octet-stream"})[1])
        out.append(client.call("POST", f"/v1/similar?k={K}", photo.read_bytes(),
                               {"Content-Type": "application/octet-stream"})[1])
    return out


INPROCESS = r"""
import json, sys, time
from pathlib import Path
import numpy as np
from engine.model import load_model
from engine import service
from space.images import load_for_network

bundle, n, photos = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
model = load_model(bundle)
raw = np.load(bundle / "images.npy", mmap_mode="r")
rng = np.random.default_rng(0)
langs = [None] + sorted(model.langs)
vectors = [np.asarray(raw[r], np.float32) * (1 + 0.05 * rng.standard_normal(raw.shape[1])).astype(np.float32)
           for r in rng.integers(0, len(raw), n + 20)]
times = []
for i, vec in enumerate(vectors):
    began = time.perf_counter()
    service.hashtags(model, vec, 10, langs[i % len(langs)])
    if i >= 20:
        times.append((time.perf_counter() - began) * 1000)
batches = [load_for_network(Path(p).read_bytes())[None] for p in photos]
encode = []
for i in range(len(batches) * 2):
    began = time.perf_counter()
    model.encode(batches[i % len(batches)])
    encode.append((time.perf_counter() - began) * 1000)
print(json.dumps({"hashtags_answer_p50_ms": round(float(np.median(times)), 3),
                  "hashtags_answer_p90_ms": round(float(np.percentile(times, 90)), 3),
                  "encoder_p50_ms": round(float(np.median(encode[len(batches):])), 2)}))
"""


def inprocess(tree: Path, bundle: Path, n: int, photos: list[Path]) -> dict[str, float]:
    """The hashtags answer alone and the encoder alone, in a child process of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", INPROCESS, str(bundle), str(n),
                          json.dumps([str(p) for p in photos[:5]])],
                         cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


RECALL = r"""
import json, sys
from pathlib import Path
import numpy as np
from engine.model import load_model
from engine import service
from space.query import parse_query
from space.textspace import unit
from space.vectorindex import nearest

bundle, n, words = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
model = load_model(bundle)
rng = np.random.default_rng(1)
K = 10

def exact(rows, q, k=K):
    sims = np.asarray(rows) @ q
    return np.argsort(-sims, kind="stable")[:k]

def recall(found, truth):
    return len(set(np.asarray(found)[:K].tolist()) & set(np.asarray(truth)[:K].tolist())) / K

queries = []
for a, b in rng.integers(0, len(words), (n, 2)):
    try:
        queries.append(model.text_query(parse_query(words[a] + " " + words[b]))[0])
    except Exception:
        pass
out = {"queries": len(queries)}
search = np.asarray(model.search_vectors)
out["images"] = float(np.mean([recall(nearest(model.search_index, model.search_vectors, q[None], [K])[0][0],
                                      exact(search, q)) for q in queries]))
for lang, rows in sorted(model.langs.items()):
    found = [service._search(model, lang, q[None], [K])[0][0] for q in queries]
    own = search[rows]
    truth = [rows[exact(own, q)] for q in queries]
    del own
    out["images_" + lang] = float(np.mean([recall(f, t) for f, t in zip(found, truth)]))
    strays = sum(int(np.isin(f, rows, invert=True).sum()) for f in found)
    out["images_" + lang + "_other_language_hits"] = strays
del search
words_unit = model.space.unit_vectors
wq = []
for a, b in rng.integers(0, len(words), (n, 2)):
    try:
        wq.append(unit(model.space.embed_query(parse_query(words[a] + " " + words[b]))[0]))
    except Exception:
        pass
out["related"] = float(np.mean([recall(nearest(model.words_index, words_unit, q[None], [K])[0][0],
                                       exact(words_unit, q)) for q in wq]))
raw = np.load(bundle / "images.npy", mmap_mode="r")
photos = [np.asarray(raw[r], np.float32) * (1 + 0.05 * rng.standard_normal(raw.shape[1])).astype(np.float32)
          for r in rng.integers(0, len(raw), n)]
images = np.asarray(model.image_vectors)
out["similar"] = float(np.mean([recall(nearest(model.images_index, model.image_vectors,
                                               model.image_query(v)[None], [K])[0][0],
                                       exact(images, model.image_query(v))) for v in photos]))
del images
if model.hashtagger is not None:
    pool = np.asarray(model.pool_vectors)
    out["hashtag_neighbours"] = float(np.mean([
        recall(nearest(model.pool_index, model.pool_vectors, unit(v)[None], [K])[0][0], exact(pool, unit(v)))
        for v in photos]))
    indexed = [json.loads(service.hashtags(model, v, K)) for v in photos]
    model.pool_index, model.pool_vectors = None, pool
    exactly = [json.loads(service.hashtags(model, v, K)) for v in photos]
    out["hashtags"] = float(np.mean([
        len({h["word"] for h in a["hashtags"]} & {h["word"] for h in b["hashtags"]}) / K
        for a, b in zip(indexed, exactly)]))
print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}))
"""


def recalls(tree: Path, bundle: Path, n: int, words: list[str]) -> dict[str, Any]:
    """Recall@10 of each indexed answer against exact ranking, in a child process of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run([sys.executable, "-c", RECALL, str(bundle), str(n), json.dumps(words)],
                         cwd=tree, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def swap_memory(engine: Engine, version: str, work: Workload, n: int) -> dict[str, Any]:
    """Peak memory while the engine swaps to ``version`` (sampled every 20 ms) against the steady state."""
    steady = memory(engine.pid)
    samples: list[dict[str, float]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            with contextlib.suppress(OSError):
                samples.append(memory(engine.pid))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    began = time.perf_counter()
    client = Client(engine.port)
    status, body, _ = client.call("POST", f"/v1/admin/reload?version={urllib.parse.quote(version)}",
                                  headers={"Authorization": f"Bearer {TOKEN}"})
    swap_s = time.perf_counter() - began
    latency(engine, work, n, salt=4242)  # the new bundle's pages are touched as the old one's were
    done.set()
    sampler.join()
    after = memory(engine.pid)
    peak_rss = max(s["VmRSS"] for s in samples)
    peak_pss = max(s["Pss"] for s in samples)
    return {"status": status, "swap_s": round(swap_s, 2), "steady": steady, "after": after,
            "peak_rss_mib": peak_rss, "peak_pss_mib": peak_pss,
            "peak_over_steady_rss": round(peak_rss / steady["VmRSS"], 3),
            "peak_over_steady_pss": round(peak_pss / steady["Pss"], 3), "answer": body[:200].decode()}


def two_processes(tree: Path, bundle: Path, work: Workload, n: int) -> dict[str, Any]:
    """One engine alone, then two on the same bundle, each warmed with the same queries."""
    with running(tree, bundle.parent) as one:
        latency(one, work, n, salt=7000)
        alone = memory(one.pid)
    with running(tree, bundle.parent) as a, running(tree, bundle.parent) as b:
        latency(a, work, n, salt=7000)
        latency(b, work, n, salt=7000)
        ma, mb = memory(a.pid), memory(b.pid)
    together = ma["Pss"] + mb["Pss"]
    return {"one": alone, "a": ma, "b": mb, "two_pss_mib": round(together, 1),
            "two_over_one": round(together / alone["VmRSS"], 3)}


def workload(bundle: Path, seed: int) -> Workload:
    vocab = json.loads((bundle / "vocab.json").read_text(encoding="utf-8"))
    order = np.argsort(-np.asarray(vocab["counts"]), kind="stable")[:5000]
    words = [vocab["words"][i] for i in order]
    items = json.loads((bundle / "images.json").read_text(encoding="utf-8"))["items"]
    sys.path.insert(0, str(ROOT))
    from space.items import public_ids

    ids = public_ids(items)
    langs = sorted({str(it["lang"]) for it in items if it.get("lang")}) or ["en"]
    photos = sorted({Path(it["path"]) for it in items[:2000] if Path(it["path"]).is_file()})[:40]
    return Workload(words, langs, ids, photos, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--baseline", type=Path, default=None, help="another source tree to compare with")
    parser.add_argument("--starts", type=int, default=3, help="start-ups timed per tree (in turn)")
    parser.add_argument("--requests", type=int, default=300, help="requests per text scenario")
    parser.add_argument("--compare", type=int, default=150, help="queries whose answers are compared")
    parser.add_argument("--recall-queries", type=int, default=300)
    parser.add_argument("--swap-to", default=None, help="a second published version for the swap")
    parser.add_argument("--first-start", action="store_true",
                        help="remove the bundle's verification stamp and time the first start")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    bundle = args.bundle.resolve()
    if (bundle.parent / "ACTIVE").read_text().strip() != bundle.name:
        raise SystemExit(f"{bundle.parent}/ACTIVE must name {bundle.name}")
    work = workload(bundle, args.seed)
    trees = {"this": ROOT} | ({"baseline": args.baseline.resolve()} if args.baseline else {})
    report: dict[str, Any] = {"bundle": str(bundle), "load": os.getloadavg()}
    n_images = len(work.ids)
    print(f"{bundle.name}: {n_images} images, {len(work.langs)} languages, trees {list(trees)}", flush=True)
    if args.first_start:
        stamp = bundle / ".verified.json"
        stamp.unlink(missing_ok=True)
        with running(ROOT, bundle.parent, settle=False) as engine:
            report["first_start_s"] = round(engine.started_s, 2)
        print("first start (full verification):", report["first_start_s"], "s", flush=True)
    starts: dict[str, list[float]] = {name: [] for name in trees}
    for _ in range(args.starts):
        for name, tree in trees.items():
            with running(tree, bundle.parent, settle=False) as engine:
                starts[name].append(engine.started_s)
    print("starts (s):", json.dumps(starts), flush=True)
    summary: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        engines = {name: stack.enter_context(running(tree, bundle.parent)) for name, tree in trees.items()}
        lat = interleaved(engines, work, args.requests, salt=1)
        for name, engine in engines.items():
            summary[name] = {"start_s": round(statistics.median(starts[name]), 2), "latency": lat[name],
                             "memory": memory(engine.pid)}
        if args.baseline:
            a = bodies(engines["this"], work, args.compare)
            b = bodies(engines["baseline"], work, args.compare)
            summary["identical_answers"] = f"{sum(x == y for x, y in zip(a, b, strict=True))} of {len(a)}"
            print("identical answers:", summary["identical_answers"], flush=True)
    for name, tree in trees.items():
        summary[name]["inprocess"] = inprocess(tree, bundle, 300, work.photos)
        print(name, json.dumps(summary[name]), flush=True)
    summary["recall_at_10"] = recalls(ROOT, bundle, args.recall_queries, work.words)
    print("recall@10:", json.dumps(summary["recall_at_10"]), flush=True)
    summary["two_processes"] = two_processes(ROOT, bundle, work, args.requests // 3)
    print("two processes:", json.dumps(summary["two_processes"]), flush=True)
    if args.swap_to:
        with running(ROOT, bundle.parent) as engine:
            latency(engine, work, args.requests // 3, salt=9000)
            summary["swap"] = swap_memory(engine, args.swap_to, work, args.requests // 3)
        (bundle.parent / "ACTIVE").write_text(bundle.name + "\n")  # a reload does not move ACTIVE; be sure
        print("swap:", json.dumps(summary["swap"]), flush=True)
    report.update(summary)
    report["load_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
