#!/usr/bin/env bash
# The README's test command: set up (idempotent), lint, type-check, run the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
ruff check .
mypy
python -m pytest -q -p no:cacheprovider "$@"
