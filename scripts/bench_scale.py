"""Original scale: each stage's wall time and peak memory of `train all` (or of its corpus stages) on a scale
corpus written by `python -m train synth`.

    # the scale corpora (docs/benchmarks.md, "Original scale")
    python -m train synth --posts 60000 --from ../shared/data/flickr8k \\
        --multilingual ../shared/data/flickr8k-multilingual/flickr8k_multi30k_es_ca.tsv \\
        --topic topics/barcelona.toml --out var/scale/c60k
    # 60,000 posts read, end to end with --quick, one kill -9 during the features stage and the rerun
    python scripts/bench_scale.py --corpus var/scale/c60k/posts.jsonl --format jsonl \\
        --weights ../shared/weights/bvlc_googlenet --quick --kill-features-after 8192 --out var/scale/b60k
    # the corpus stages alone (ingest, filter, split) at 600,000 posts read, each layout
    python scripts/bench_scale.py --corpus var/scale/c600k/posts.jsonl --format jsonl --until split \\
        --out var/scale/b600k-jsonl
    # everything after the corpus stages too, the features imported (`train all --features DIR`)
    python scripts/bench_scale.py --corpus var/scale/c600k/posts.jsonl --format jsonl --quick \\
        --weights ../shared/weights/bvlc_googlenet --out var/scale/b600k -- --features var/scale/f600k

The command is the real `python -m train all` (or `train split`/`train text` with ``--until``) with
``--topic topics/barcelona.toml`` and a progress file, in a fresh models folder under ``--out``; arguments
after ``--`` are passed on. While it runs, the script samples every 0.5 s the memory of the trainer and of
every process it started (proportional set size, so pages forked children share count once) and the
machine's load, and attributes each sample to the stage the progress file names at that moment. The table:
each stage's wall time (from the progress file) and peak memory; the whole run's wall time, peak, and
the load average while it ran. With ``--kill-features-after N`` the trainer's process group gets SIGKILL
once the features stage reports N photos done, and the same command runs again: the table is the rerun's,
with what its features stage found done. The last stdout line is JSON (also written to ``OUT/bench.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# The pipeline's own stages and phases, in order; any other progress name (a stage's sub-steps, e.g.
# "filter:language" or "chunks") belongs to the one before it.
STAGES = ("ingest", "filter", "split", "text", "features", "joint", "image", "export", "encode", "quantize",
          "hashtags", "stage-bundle", "index", "eval", "report", "publish")
SAMPLE_S = 0.5


def _top(name: Any, current: str | None) -> str | None:
    """The top-level stage a progress record belongs to (the features stage reports its photos as
    "encode", the seed recipe's own encode stage too)."""
    if name in STAGES and not (name == "encode" and current == "features"):
        return str(name)
    return current


def _children() -> dict[int, list[int]]:
    """Parent pid → child pids, from /proc."""
    out: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(fields[1])].append(int(entry.name))
    return out


def _memory_kb(pid: int) -> int:
    """A process's proportional set size (its share of shared pages), else its resident set size."""
    for path, key in ((f"/proc/{pid}/smaps_rollup", "Pss:"), (f"/proc/{pid}/status", "VmRSS:")):
        try:
            with open(path, encoding="ascii") as f:
                for line in f:
                    if line.startswith(key):
                        return int(line.split()[1])
        except OSError:
            continue
    return 0


def tree_memory_mb(root: int) -> float:
    """Memory of ``root`` and every process below it, in MB."""
    kids = _children()
    pending, total = [root], 0
    while pending:
        pid = pending.pop()
        total += _memory_kb(pid)
        pending.extend(kids.get(pid, ()))
    return total / 1024


def _last_stage(progress: Path, offset: int, current: str | None) -> tuple[int, str | None]:
    """The progress file's latest top-level stage after ``offset`` (and the new offset)."""
    try:
        with progress.open(encoding="utf-8") as f:
            f.seek(offset)
            for line in f:
                if not line.endswith("\n"):
                    break
                offset += len(line.encode("utf-8"))
                current = _top(json.loads(line).get("stage"), current)
    except (OSError, ValueError):
        pass
    return offset, current


def _features_counts(progress: Path) -> tuple[int | None, int]:
    """(the first and the largest photo count the features stage reported; None: it reported none)."""
    first, done = None, 0
    try:
        lines = progress.read_text(encoding="utf-8").splitlines()
    except OSError:
        return None, 0
    stage = None
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        stage = _top(record.get("stage"), stage)
        if stage == "features" and record.get("stage") == "encode" and isinstance(record.get("done"), int):
            first = record["done"] if first is None else first
            done = max(done, record["done"])
    return first, done


def _features_done(progress: Path) -> int:
    return _features_counts(progress)[1]


def run(cmd: list[str], progress: Path, log: Path, kill_features_after: int | None = None) -> dict[str, Any]:
    """Run ``cmd`` with memory and load sampled per stage; with ``kill_features_after``, SIGKILL its process
    group once the features stage reports that many photos done."""
    progress.unlink(missing_ok=True)
    started = time.monotonic()
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    peaks: dict[str, float] = defaultdict(float)
    offset, stage, peak, loads, killed = 0, None, 0.0, [], False
    while proc.poll() is None:
        offset, stage = _last_stage(progress, offset, stage)
        mb = tree_memory_mb(proc.pid)
        peak = max(peak, mb)
        if stage is not None:
            peaks[stage] = max(peaks[stage], mb)
        loads.append(os.getloadavg()[0])
        if kill_features_after is not None and stage == "features" and \
                _features_done(progress) >= kill_features_after:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            proc.wait()
            break
        time.sleep(SAMPLE_S)
    wall = time.monotonic() - started
    return {"rc": proc.returncode, "wall_s": round(wall, 1), "peak_mb": round(peak), "killed": killed,
            "stage_peak_mb": {k: round(v) for k, v in peaks.items()},
            "stage_s": stage_seconds(progress), "load_mean": round(sum(loads) / max(1, len(loads)), 1),
            "features_done_at_kill": _features_done(progress) if killed else None,
            # A resumed features stage reports the photos it found done in its first count.
            "features_first_count": _features_counts(progress)[0]}


def stage_seconds(progress: Path) -> dict[str, float]:
    """Each top-level stage's wall time from the progress file (its sub-steps included)."""
    spans: dict[str, list[float]] = {}
    stage = None
    try:
        lines = progress.read_text(encoding="utf-8").splitlines()
    except OSError:
        return {}
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue
        elapsed = record.get("elapsed")
        if not isinstance(elapsed, int | float):
            continue
        top = _top(record.get("stage"), stage)
        if top != stage and top is not None:
            stage = top
            spans.setdefault(stage, [elapsed, elapsed])
        if stage is not None:
            spans[stage][1] = max(spans[stage][1], elapsed)
    return {k: round(b - a, 1) for k, (a, b) in spans.items()}


def table(result: dict[str, Any]) -> str:
    """Markdown rows: stage, wall time, peak memory."""
    rows = ["| stage | wall time | peak memory (trainer + its processes, PSS) |", "|---|---|---|"]
    for name in STAGES:
        if name in result["stage_s"]:
            mb = result["stage_peak_mb"].get(name)
            memory = f"{mb / 1024:.2f} GB" if mb else "– (too short to sample)"
            rows.append(f"| {name} | {_duration(result['stage_s'][name])} | {memory} |")
    whole = f"**{_duration(result['wall_s'])}** | **{result['peak_mb'] / 1024:.2f} GB**"
    rows.append(f"| **whole run** | {whole} |")
    return "\n".join(rows)


def _duration(s: float) -> str:
    return f"{s:.1f} s" if s < 120 else f"{int(s // 60)} min {int(s % 60)} s"


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table and the JSON summary."""
    argv = sys.argv[1:] if argv is None else argv
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True)
    p.add_argument("--format", choices=("jsonl", "instaloader"), required=True)
    p.add_argument("--weights", type=Path, default=None)
    p.add_argument("--topic", type=Path, default=ROOT / "topics" / "barcelona.toml")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--until", choices=("split", "text", "all"), default="all")
    p.add_argument("--kill-features-after", type=int, default=None, metavar="PHOTOS")
    p.add_argument("--out", type=Path, required=True, help="a folder for the models, logs and bench.json")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "train", args.until, "--corpus", str(args.corpus.resolve()), "--format",
           args.format, "--models", str((args.out / "models").resolve()), "--topic", str(args.topic),
           "--progress-file", str((args.out / "progress.jsonl").resolve())]
    if args.weights is not None:
        cmd += ["--weights", str(args.weights)]
    if args.quick:
        cmd.append("--quick")
    cmd += extra
    log, progress = args.out / "train.log", args.out / "progress.jsonl"
    summary: dict[str, Any] = {"command": " ".join(cmd[1:]), "cores": os.cpu_count(),
                               "load_before": [round(x, 1) for x in os.getloadavg()]}
    if args.kill_features_after is not None:
        summary["killed_run"] = run(cmd, progress, log, args.kill_features_after)
        print(f"killed run: {summary['killed_run']}", file=sys.stderr, flush=True)
    result = run(cmd, progress, log)
    summary.update(result)
    summary["load_after"] = [round(x, 1) for x in os.getloadavg()]
    print(table(result))
    print(f"(load average while it ran: {result['load_mean']}; before {summary['load_before']}, "
          f"after {summary['load_after']}; {os.cpu_count()} cores)")
    (args.out / "bench.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print(json.dumps(summary))
    return 0 if result["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
