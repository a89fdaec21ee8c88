"""``python -m train.report --bundle PATH [--out DIR] [--maps-only]``: redraw a bundle's report."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from train.report import ReportConfig, report_from_bundle


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, rebuild the report (or only the image maps) and print where it went."""
    parser = argparse.ArgumentParser(prog="python -m train.report", description=__doc__)
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: BUNDLE/report)")
    parser.add_argument("--maps-only", action="store_true", help="only the t-SNE photo mosaics")
    parser.add_argument("--sizes", default="1024,2048,4096", help="mosaic sizes in pixels, comma-separated")
    parser.add_argument("--max-grid", type=int, default=64, help="at most this many tiles a side")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = ReportConfig(
        mosaic_sizes=tuple(int(s) for s in args.sizes.split(",") if s.strip()),
        mosaic_max_grid=args.max_grid,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    out = args.out or args.bundle / "report"
    summary = report_from_bundle(args.bundle, out, cfg, maps_only=args.maps_only)
    json.dump({"out": str(out), "files": summary.get("files", {})}, sys.stdout, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
