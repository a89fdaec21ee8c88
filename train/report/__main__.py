"""``python -m train.report --bundle PATH [--out DIR] [--maps-only]``: redraw a bundle's report."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from space.cli import Parser
from space.errors import SpaceError
from space.logs import env_secrets, redact, setup_logging
from train.report import ReportConfig, report_from_bundle


def _sizes(raw: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(s) for s in raw.split(",") if s.strip())
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 64:
        raise argparse.ArgumentTypeError(f"expected sizes in pixels (≥ 64) like 1024,2048, got {raw!r}")
    return sizes


def build_parser() -> Parser:
    """The command line."""
    parser = Parser("train.report", __doc__)
    parser.add_argument("--bundle", type=Path, required=True, help="a bundle directory")
    parser.add_argument("--out", type=Path, default=None, help="output directory (default: BUNDLE/report)")
    parser.add_argument("--maps-only", action="store_true", help="only the t-SNE photo mosaics")
    parser.add_argument("--sizes", type=_sizes, default="1024,2048,4096",
                        help="mosaic sizes in pixels, comma-separated")
    parser.add_argument("--max-grid", type=int, default=64, help="at most this many tiles a side")
    parser.add_argument("--seed", type=int, default=0, help="seed of t-SNE and of the sample")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, rebuild the report (or only the image maps) and print where it went."""
    parser = build_parser()
    args = parser.parse(argv)
    setup_logging(parser.log_settings(args), env_secrets(parser.env))
    cfg = ReportConfig(
        mosaic_sizes=args.sizes,
        mosaic_max_grid=args.max_grid,
        seed=args.seed,
        show_progress=not args.quiet,
    )
    out = args.out or args.bundle / "report"
    try:
        summary = report_from_bundle(args.bundle, out, cfg, maps_only=args.maps_only)
    except (SpaceError, OSError, ValueError) as exc:  # no such bundle, a full disk, …: one line
        print(f"error: {redact(str(exc), env_secrets(parser.env))}", file=sys.stderr, flush=True)
        return 1
    json.dump({"out": str(out), "files": summary.get("files", {})}, sys.stdout, ensure_ascii=False)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
