#!/usr/bin/env bash
# Audit the locked dependencies (requirements.lock, requirements-gpu.lock) for known vulnerabilities with
# pip-audit. CI runs it (scripts/test.sh).
#
# Exit status: 1 when pip-audit found vulnerable packages; otherwise 0. When the vulnerability service
# cannot be reached (offline CI, or a PyPI mirror without the JSON API) it prints a WARNING line saying
# how many packages were NOT audited and exits 0 (2 with AUDIT_STRICT=1): the network must not fail an
# offline build, but it must not pass silently as "no known vulnerabilities" either (pip-audit itself
# exits 0 when it audited nothing).
# Usage: scripts/audit.sh   (uses .venv if present, else python3 on PATH)
#   AUDIT_TARGET=lock (default: requirements.lock, pinned, no resolution) | env (the installed packages)
#   AUDIT_SERVICE=pypi (default) | osv;  OSV_URL=...  a self-hosted OSV API (the only offline route)
#   AUDIT_TIMEOUT_S=15;  AUDIT_STRICT=1  exit 2 when the audit could not be performed
set -uo pipefail

cd "$(dirname "$0")/.."
if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi

if ! "$PY" -m pip_audit --version >/dev/null 2>&1; then
  echo "WARNING: pip-audit is not installed ('$PY -m pip install pip-audit'); audit NOT performed."
  exit 0
fi

report="$(mktemp)"
log="$(mktemp)"
trap 'rm -f "$report" "$log"' EXIT
if [[ "${AUDIT_TARGET:-lock}" == lock ]]; then
  # Every line is pinned (pip freeze), so no resolver run: --no-deps --disable-pip. The gpu extra's pin
  # (requirements-gpu.lock, ONNX Runtime's CUDA build) is audited with it.
  target=(--requirement requirements.lock --requirement requirements-gpu.lock --no-deps --disable-pip)
else
  # --local: only this environment's packages; the editable project itself is not on PyPI, so skip it.
  target=(--local --skip-editable)
fi
service=(--vulnerability-service "${AUDIT_SERVICE:-pypi}")
if [[ -n "${OSV_URL:-}" ]]; then service=(--vulnerability-service osv --osv-url "$OSV_URL"); fi
"$PY" -m pip_audit "${target[@]}" "${service[@]}" --progress-spinner off \
  --timeout "${AUDIT_TIMEOUT_S:-15}" --format json --output "$report" >"$log" 2>&1
rc=$?

"$PY" - "$report" "$log" "$rc" "${AUDIT_STRICT:-0}" <<'PY'
"""Summarise pip-audit's JSON report; exit 1 only for real findings (2: not audited, when strict)."""
import json
import sys

report, log, rc, strict = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
try:
    with open(report, encoding="utf-8") as f:
        deps = json.load(f).get("dependencies", [])
except (OSError, ValueError):
    tail = open(log, encoding="utf-8", errors="replace").read().strip().splitlines()[-5:]
    print("\n".join(tail))
    print(f"WARNING: pip-audit produced no report (exit {rc}); the vulnerability service is probably "
          "unreachable. Audit NOT performed.")
    sys.exit(2 if strict else 0)
skipped = [d for d in deps if "skip_reason" in d]
unreachable = [d for d in skipped if "could not be audited" in d["skip_reason"]]
audited = [d for d in deps if "skip_reason" not in d]
vulnerable = [d for d in audited if d.get("vulns")]
for d in vulnerable:
    for v in d["vulns"]:
        fix = ", ".join(v.get("fix_versions", [])) or "no fix yet"
        print(f"VULNERABLE {d['name']} {d['version']}: {v['id']} (fixed in: {fix})")
print(f"audit: {len(audited)} packages audited, {len(vulnerable)} vulnerable, {len(skipped)} skipped.")
if unreachable:
    names = ", ".join(sorted(d["name"] for d in unreachable)[:10])
    print(f"WARNING: {len(unreachable)} of {len(deps)} packages could NOT be audited: the vulnerability "
          f"service did not answer for them (offline, or no PyPI JSON API here), e.g. {names}.")
sys.exit(1 if vulnerable else 2 if strict and unreachable else 0)
PY
