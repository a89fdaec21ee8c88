#!/usr/bin/env bash
# Sets up .venv with every extra (train, engine, bot, dev) and the system packages the tests need.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; })
  else
    echo "note: redis-server not found; install it (apt-get install redis-server) for the Redis tests" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ]; then
  python -m pip install -q --upgrade pip
  # torch first, pinned: pip takes these two from the machine's local files where they lie.
  python -m pip install -q torch==2.14.1 torchvision==0.29.1
  python -m pip install -q -e '.[train,engine,bot,dev]'
  touch .venv/.installed
fi
