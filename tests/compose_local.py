"""docker-compose.yml's services as local processes: the closest this machine gets to `compose up`.

There is no Docker engine here, so each service's ``command`` runs as a process of this machine, with the
``environment`` compose would give it, interpolated from an operator's ``.env`` the way compose does
(``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?error}``, ``$$``), and nothing else from
this machine's environment but ``PATH``. What only exists inside the compose network is mapped onto
loopback: the service names and container ports (``redis:6379``, ``redis-cache:6379``, ``engine:8080``,
``engine:9090``, ``0.0.0.0``, the metrics and webhook ports) to free local ports, the mount points
(``/models``, ``/corpus``, ``/weights``, ``/app``) to folders; ``TMPDIR`` is the work folder (the
containers' ``/tmp``). A ``depends_on`` with ``service_healthy`` is honoured by running the service's own
``healthcheck`` command (mapped the same way) until it passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT, free_port

COMPOSE_FILE = ROOT / "docker-compose.yml"
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class ComposeError(Exception):
    """What ``docker compose`` itself would refuse (a required variable unset)."""


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution of one string."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, op, arg = m.group(1), m.group(2), m.group(3)
        value = env.get(name)
        unset_or_empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and (unset_or_empty if op == ":-" else value is None):
            return interpolate(arg, env)
        if op in (":?", "?") and (unset_or_empty if op == ":?" else value is None):
            raise ComposeError(f"required variable {name} is missing a value: {arg}")
        return value or ""

    return _VAR.sub(sub, text)


def load() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    return dict(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


class LocalCompose:
    """The compose project's services as processes of this machine, from an operator's ``.env``."""

    def __init__(self, dotenv: dict[str, str], workdir: Path, mounts: dict[str, Path]) -> None:
        self.dotenv = dict(dotenv)
        self.workdir = workdir
        self.services: dict[str, Any] = load()["services"]
        self.ports = {name: free_port() for name in ("redis", "redis-cache", "engine", "metrics", "webhook")}
        self.mounts = {"/app": ROOT, **mounts}
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.logs: dict[str, Path] = {}

    # -- what compose would hand the container, mapped onto this machine -----------------------------
    def localize(self, value: str) -> str:
        """A container-side address, port or path as it is on this machine."""
        p = self.ports
        value = (value.replace("@redis:6379", f"@127.0.0.1:{p['redis']}")
                 .replace("@redis-cache:6379", f"@127.0.0.1:{p['redis-cache']}")
                 .replace("http://engine:8080", f"http://127.0.0.1:{p['engine']}")
                 .replace("http://engine:9090", f"http://127.0.0.1:{p['metrics']}")
                 .replace("127.0.0.1:8080", f"127.0.0.1:{p['engine']}")
                 .replace("0.0.0.0", "127.0.0.1"))
        whole = {"8080": p["engine"], "9090": p["metrics"], "8443": p["webhook"], "6379": p["redis"]}
        if value in whole:
            return str(whole[value])
        for mount, local in sorted(self.mounts.items(), key=lambda kv: -len(kv[0])):
            if value == mount or value.startswith(mount + "/"):
                return str(local) + value[len(mount):]
        return value

    def environment(self, service: str, dotenv: dict[str, str] | None = None) -> dict[str, str]:
        """The service's environment: compose's, interpolated from ``.env``, mapped; plus PATH alone."""
        env = self.dotenv if dotenv is None else dotenv
        declared = self.services[service].get("environment") or {}
        out = {k: self.localize(interpolate(str(v), env)) for k, v in declared.items()}
        # PYTHONPATH, when the tests have one, names the source tree under test (the image's /app).
        code = {"PYTHONPATH": os.environ["PYTHONPATH"]} if os.environ.get("PYTHONPATH") else {}
        return {"PATH": os.environ["PATH"], "HOME": str(self.workdir), "LANG": "C.UTF-8",
                "TMPDIR": str(self.workdir), **code, **out}

    def command(self, service: str, dotenv: dict[str, str] | None = None) -> list[str]:
        """The service's command line, interpolated and mapped; console scripts from this interpreter."""
        env = self.dotenv if dotenv is None else dotenv
        argv = [self.localize(interpolate(str(a), env)) for a in self.services[service]["command"]]
        script = Path(sys.executable).with_name(argv[0])
        if script.is_file():
            argv[0] = str(script)
        if service.startswith("redis"):  # the container's port, interface and data folder, here
            if shutil.which("redis-server") is None:
                raise ComposeError("redis-server is not installed")
            argv = [*argv, "--port", str(self.ports[service]), "--bind", "127.0.0.1",
                    "--dir", str(self.workdir), "--save", ""]
        return argv

    # -- running --------------------------------------------------------------------------------------
    async def start(self, service: str) -> None:
        """Start the service's process (its output in ``logs[service]``)."""
        self.logs[service] = self.workdir / f"{service}.log"
        with self.logs[service].open("wb") as log:
            self.procs[service] = await asyncio.create_subprocess_exec(
                *self.command(service), env=self.environment(service), cwd=self.workdir,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=asyncio.subprocess.STDOUT)

    async def run_once(self, service: str, dotenv: dict[str, str], timeout: float = 60) -> tuple[int, str]:
        """Run the service with another ``.env`` until it exits: (exit status, its output)."""
        proc = await asyncio.create_subprocess_exec(
            *self.command(service, dotenv), env=self.environment(service, dotenv), cwd=self.workdir,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        return int(proc.returncode or 0), out.decode()

    async def healthcheck(self, service: str) -> bool:
        """Run the service's healthcheck command once (CMD or CMD-SHELL); whether it passed."""
        declared = self.services[service]["healthcheck"]["test"]
        test = [self.localize(interpolate(str(a), self.dotenv)) for a in declared]
        kind, argv = test[0], test[1:]
        if kind == "CMD-SHELL":
            port = self.ports.get(service, self.ports["redis"])
            shell = argv[0].replace("redis-cli", f"redis-cli -p {port}")
            argv = ["sh", "-c", shell]
        elif argv[0] == "python":
            argv[0] = sys.executable
        proc = await asyncio.create_subprocess_exec(*argv, env=self.environment(service), cwd=self.workdir,
                                                    stdout=asyncio.subprocess.DEVNULL,
                                                    stderr=asyncio.subprocess.DEVNULL)
        return await proc.wait() == 0

    async def wait_healthy(self, service: str, timeout: float = 90) -> None:
        """Until the healthcheck passes (what ``depends_on: condition: service_healthy`` waits for)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await self.healthcheck(service):
            proc = self.procs[service]
            if proc.returncode is not None:
                raise AssertionError(f"{service} exited with {proc.returncode}: {self.log(service)[-2000:]}")
            if loop.time() > deadline:
                raise AssertionError(f"{service} never became healthy: {self.log(service)[-2000:]}")
            await asyncio.sleep(0.5)

    def log(self, service: str) -> str:
        """What the service has printed so far."""
        return self.logs[service].read_text(encoding="utf-8", errors="replace")

    async def down(self) -> None:
        """Stop every service (SIGTERM, then SIGKILL after 20 s), in reverse start order."""
        for service, proc in reversed(list(self.procs.items())):
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 20)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            del self.procs[service]
