"""A stand-in for `python -m train all` in the compose test: publishes a copy of a finished bundle.

Run by the trainer worker exactly as it runs the trainer (the job's argv, the worker's environment), it
speaks the progress-file protocol, publishes a copy of ``--from-bundle`` under ``--models`` and announces it
over Redis as the trainer does, and prints what reached it (on the worker's log).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    """Publish, announce, report done."""
    from space.announce import announce_from_env
    from space.bundle import active_path
    from tests.engine.helpers import publish_copy

    p = argparse.ArgumentParser()
    p.add_argument("--from-bundle", type=Path, required=True)
    p.add_argument("--models", type=Path, required=True)
    p.add_argument("--progress-file", type=Path, required=True)
    args, rest = p.parse_known_args()
    with args.progress_file.open("a", encoding="utf-8") as f:
        f.write(json.dumps({"stage": "ingest", "done": 0, "total": None, "unit": "posts"}) + "\n")
    version = publish_copy(args.models, args.from_bundle)
    announce_from_env(version)
    print(f"stand-in trainer: published {version}; argv {rest}; TRAIN_TOPIC={os.environ.get('TRAIN_TOPIC')}",
          flush=True)
    with args.progress_file.open("a", encoding="utf-8") as f:
        record = {"stage": "done", "bundle": str(active_path(args.models)), "version": version}
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
