#!/usr/bin/env bash
# Sets up .venv with every extra (train, engine, bot, dev) at the versions of requirements.lock, the set
# scripts/audit.sh audits, and the system packages the tests need (redis-server, chromium).
# Idempotent: a second run only checks (it installs again when pyproject.toml or the lock changed).
# Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q redis-server >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q redis-server >/dev/null; })
  else
    echo "note: redis-server not found; install it (apt-get install redis-server) for the Redis tests" >&2
  fi
fi
# Debian's chromium for the web page's browser tests (tests/engine/test_web_browser.py) and
# scripts/screenshots.py: playwright drives /usr/bin/chromium and never downloads a browser.
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; })
  else
    echo "note: chromium not found; install it (apt-get install chromium) for the web page's browser tests" >&2
  fi
fi
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
if [ ! -f .venv/.installed ] || [ pyproject.toml -nt .venv/.installed ] || [ requirements.lock -nt .venv/.installed ]; then
  # Exactly the locked set, nothing resolved anew: every dependency of every extra is pinned in the lock
  # (torch and torchvision from the machine's local files where they lie, with the CUDA libraries they
  # pull); --no-deps so that nothing unpinned slips in, and pip check fails if the lock misses one.
  python -m pip install -q --no-deps -r requirements.lock
  # The project itself, editable, built with the locked setuptools.
  python -m pip install -q --no-deps --no-build-isolation -e .
  python -m pip check
  touch .venv/.installed
fi
