"""requirements.lock is what runs: it pins every package the extras need, and the venv is exactly it.

Issue 19, item 9: scripts/setup.sh installed the extras unpinned, so the audited lock drifted from what
ran (arq, redis, filelock, … at other versions than the lock said, pip-audit's tree in the lock but not
in the venv).
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import ROOT

EXTRAS = ("train", "engine", "bot", "arq", "dev")


def _lock() -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version and " " not in version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def _project_requirements() -> list[str]:
    """pyproject.toml's dependencies and those of the extras (the source, not a possibly stale egg-info)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for e in EXTRAS for r in project["optional-dependencies"][e])]


def _needed() -> dict[str, list[Requirement]]:
    """Every distribution topicspace[train,engine,bot,dev] needs here, with the requirements naming it."""
    needed: dict[str, list[Requirement]] = {}
    todo = [(Requirement(raw), "") for raw in _project_requirements()]
    seen: set[tuple[str, str]] = set()
    while todo:
        req, extra = todo.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": extra}):
            continue
        key = canonicalize_name(req.name)
        needed.setdefault(key, []).append(req)
        for wanted in {"", *req.extras}:
            if (key, wanted) not in seen:
                seen.add((key, wanted))
                todo.extend((Requirement(raw), wanted) for raw in metadata.requires(req.name) or [])
    return needed


def test_the_lock_pins_every_package_the_extras_need_at_an_allowed_version() -> None:
    pins = _lock()
    needed = _needed()
    missing = sorted(set(needed) - set(pins))
    assert missing == [], f"needed but not in requirements.lock: {missing}"
    refused = {name: (pins[name], [str(r.specifier) for r in reqs])
               for name, reqs in needed.items()
               if any(not r.specifier.contains(Version(pins[name]), prereleases=True) for r in reqs)}
    assert refused == {}, f"locked versions a requirement refuses: {refused}"
    assert pins.get("torch") == "2.14.1" and pins.get("torchvision") == "0.29.1"


def test_the_venv_runs_exactly_the_locked_versions() -> None:
    drift = {}
    for name, version in _lock().items():
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            installed = None
        if installed is None or Version(installed) != Version(version):
            drift[name] = (version, installed)
    assert drift == {}, f"(locked, installed) differ; run bash scripts/setup.sh: {drift}"


def test_setup_installs_the_lock_and_nothing_unpinned() -> None:
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    installs = [line.strip() for line in setup.splitlines() if re.search(r"pip install", line)
                and not line.lstrip().startswith("#")]
    assert installs, "scripts/setup.sh installs nothing"
    for line in installs:
        assert "--no-deps" in line, f"may resolve unpinned versions: {line}"
        assert "-r requirements.lock" in line or line.endswith("-e ."), line
    audit = (ROOT / "scripts" / "audit.sh").read_text()
    assert "--requirement requirements.lock" in audit
    assert Path(ROOT / "requirements.lock").read_text().count("pip_audit==") == 1  # audit.sh runs here


# ---- issue 25, item 3: each dependency declared where it is imported, and only ranges in pyproject ----

# What a package may import at module level: the core and the extra of its process.
PACKAGE_EXTRAS = {"space": (), "engine": ("engine",), "bot": ("bot",), "train": ("train",)}
# Imported inside a function of the core, by the processes that declare them (engine and train: both).
LAZY_IN_CORE = {"onnxruntime": ("engine", "train"), "redis": ("engine", "train")}


def _declared(extras: tuple[str, ...]) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    raw = [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]
    return {canonicalize_name(Requirement(r).name) for r in raw}


def _imports(package: str, module_level: bool) -> dict[str, set[str]]:
    """Third-party distributions a package imports: distribution → the files importing it."""
    import ast
    import sys

    dists = metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        # Module level: the statements of the module itself (an import guarded by try/suppress is optional).
        nodes = tree.body if module_level else list(ast.walk(tree))
        for node in nodes:
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level
                     else [])
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in PACKAGE_EXTRAS or top == "tests":
                    continue
                for dist in dists.get(top, [top]):
                    found.setdefault(canonicalize_name(dist), set()).add(path.relative_to(ROOT).as_posix())
    return found


def test_every_package_declares_what_it_imports_at_module_level() -> None:
    undeclared = {}
    for package, extras in PACKAGE_EXTRAS.items():
        declared = _declared(extras)
        for dist, files in _imports(package, module_level=True).items():
            if dist not in declared:
                undeclared[f"{package}: {dist}"] = sorted(files)
    assert undeclared == {}, "imported at module level but not declared in the package's extra"


def test_every_import_is_declared_somewhere_that_uses_it() -> None:
    """Imports inside functions too: the process's extra, or the optional arq extra (RETRAIN_MODE=arq)."""
    for package, extras in PACKAGE_EXTRAS.items():
        allowed = _declared(extras) | ({"arq"} if package in ("bot", "train") else set())
        for dist, files in _imports(package, module_level=False).items():
            if package == "space" and dist in LAZY_IN_CORE:
                assert all(dist in _declared((e,)) for e in LAZY_IN_CORE[dist]), dist
                continue
            assert dist in allowed, (package, dist, sorted(files))


def test_pyproject_declares_ranges_and_the_lock_pins() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    every = [*project["dependencies"],
             *(r for extra in project["optional-dependencies"].values() for r in extra)]
    exact = [r for r in every if any(s.operator in ("==", "===") for s in Requirement(r).specifier)]
    assert exact == [], "exact pins belong in requirements.lock"
    assert "stop-words" not in {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}


# ---- the audit CI runs (scripts/test.sh → scripts/audit.sh), against a local stand-in of the OSV API ----


class _Osv:
    """An OSV API on loopback: no vulnerability, except one for ``vulnerable`` (a package of the lock)."""

    def __init__(self, vulnerable: str | None) -> None:
        import http.server
        import json
        import threading

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                query = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                name = query["package"]["name"]
                outer.asked.add(name)
                body = {} if name != vulnerable else {"vulns": [{
                    "id": "GHSA-test-0001", "summary": "a test advisory",
                    "affected": [{"package": {"name": name, "ecosystem": "PyPI"},
                                  "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"},
                                                                              {"fixed": "99.0"}]}]}]}]}
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.asked: set[str] = set()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/query"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _audit(**env: str) -> tuple[int, str]:
    import os
    import subprocess

    out = subprocess.run(["bash", str(ROOT / "scripts" / "audit.sh")], env={**os.environ, **env},
                         capture_output=True, text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


def test_ci_runs_the_audit_and_the_audit_fails_on_a_finding_only() -> None:
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    assert "bash scripts/audit.sh" in test_sh and test_sh.index("audit.sh") < test_sh.index("pytest")
    assert "requirements-gpu.lock" in (ROOT / "scripts" / "audit.sh").read_text()
    osv = _Osv(vulnerable="babel")
    try:
        rc, out = _audit(OSV_URL=osv.url)
    finally:
        osv.close()
    assert rc == 1 and "VULNERABLE babel 2.18.0: GHSA-test-0001 (fixed in: 99.0)" in out, out
    pins = _lock()
    assert {"babel", "torch", "onnxruntime-gpu"} <= osv.asked and len(osv.asked) == len(pins) + 1
    clean = _Osv(vulnerable=None)
    try:
        rc, out = _audit(OSV_URL=clean.url)
    finally:
        clean.close()
    assert rc == 0 and f"audit: {len(pins) + 1} packages audited, 0 vulnerable, 0 skipped." in out, out


def test_an_unreachable_vulnerability_service_is_a_clear_skip() -> None:
    from tests.conftest import free_port

    closed = f"http://127.0.0.1:{free_port()}/v1/query"
    rc, out = _audit(OSV_URL=closed, AUDIT_TIMEOUT_S="2")
    assert rc == 0 and "Audit NOT performed" in out, out
    rc, out = _audit(OSV_URL=closed, AUDIT_TIMEOUT_S="2", AUDIT_STRICT="1")
    assert rc == 2, out


def test_the_documented_command_switches_the_onnx_runtime_between_cpu_and_gpu() -> None:
    """The two wheels install one module: the switch removes one before installing the other, each at its
    lock's version (DRY_RUN prints the commands; installing CUDA wheels is not done in CI)."""
    import os
    import subprocess

    def dry(*args: str) -> list[str]:
        out = subprocess.run(["bash", str(ROOT / "scripts" / "use_gpu_runtime.sh"), *args], text=True,
                             env={**os.environ, "DRY_RUN": "1"}, capture_output=True, check=True).stdout
        return out.splitlines()

    gpu_pin = next(line for line in (ROOT / "requirements-gpu.lock").read_text().splitlines()
                   if line.startswith("onnxruntime-gpu=="))
    to_gpu, to_cpu = dry(), dry("--cpu")
    assert to_gpu[0].endswith("pip uninstall -y -q onnxruntime")
    assert to_gpu[1].endswith(f"--no-deps {gpu_pin}")
    assert to_cpu[0].endswith("uninstall -y -q onnxruntime-gpu")
    assert to_cpu[1].endswith(f"--no-deps onnxruntime=={_lock()['onnxruntime']}")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    gpu_extra = extras["gpu"]
    assert Requirement(gpu_extra[0]).specifier.contains(gpu_pin.split("==")[1])
    assert "use_gpu_runtime.sh" in (ROOT / "README.md").read_text()
