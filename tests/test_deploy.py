"""The compose deployment as files: services run console scripts the tests exercise, every variable a
service's code reads reaches it, the images install from requirements.lock and own their volumes, nothing
but the API is published (the webhook with its override file), every service is hardened (memory and
process limits, no capabilities, read-only root), the answer cache has its own evicting Redis, and no
password is on a command line. tests/test_compose_up.py runs the services themselves.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
# The console scripts and the tests that run them as real processes.
EXERCISED = {
    "topicspace-engine": "tests/engine/test_main.py",
    "topicspace-bot": "tests/bot/test_modes.py",
    "topicspace-trainer-worker": "tests/bot/test_retrain_arq.py",
}
# The code each service runs: the variables it reads are the ones compose must hand it. (The trainer's jobs
# inherit the worker's environment: `python -m train all` and the bundle announcement.)
READERS = {
    "engine": ["engine/*.py"],
    "bot": ["bot/*.py", "space/jobs.py"],
    "trainer": ["train/worker.py", "space/jobs.py", "space/announce.py", "train/__main__.py"],
}
# Read by the code, deliberately not handed over by compose.
NOT_PASSED = {
    # Set by the engine itself under ENGINE_PROCESSES > 1; even an empty value would switch prometheus_client
    # into multiprocess mode at import.
    "PROMETHEUS_MULTIPROC_DIR",
    # Set for each job by the worker (--progress-file).
    "TRAIN_PROGRESS_FILE",
}
_READ = re.compile(r"""(?:get|environ\[|getenv|_env_path)\(?\s*["']([A-Z][A-Z0-9_]{2,})["']""")


def _compose(name: str = "docker-compose.yml") -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def _documented() -> set[str]:
    text = (ROOT / ".env.example").read_text()
    return set(re.findall(r"^([A-Z][A-Z0-9_]+)=", text, flags=re.M))


def _read_by(globs: list[str]) -> set[str]:
    names: set[str] = set()
    for pattern in globs:
        for path in ROOT.glob(pattern):
            names |= set(_READ.findall(path.read_text()))
    return names


def test_services_and_healthchecks() -> None:
    services = _compose()["services"]
    assert {"redis", "redis-cache", "engine", "bot", "trainer"} <= set(services)
    assert services["trainer"]["profiles"] == ["train"]
    for name in ("redis", "redis-cache", "engine"):
        assert "healthcheck" in services[name]
    for name, svc in services.items():
        assert svc.get("restart") == "unless-stopped", name
    assert "models:/models" in services["engine"]["volumes"]
    assert "models:/models" in services["trainer"]["volumes"]
    # The bot starts once the engine is alive, bundle or not: /retrain from the bot is how it gets one.
    assert services["bot"]["depends_on"] == {"engine": {"condition": "service_healthy"}}
    assert "/healthz" in " ".join(services["engine"]["healthcheck"]["test"])


def test_every_command_is_an_exercised_console_script() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    for name, svc in _compose()["services"].items():
        if "build" not in svc:
            continue
        command = svc["command"][0]
        assert command in scripts, f"{name}: {command} is not a console script"
        test_file = ROOT / EXERCISED[command]
        assert command in test_file.read_text() or scripts[command].split(":")[0] in test_file.read_text()


def test_each_service_gets_every_variable_its_code_reads() -> None:
    services = _compose()["services"]
    for service, globs in READERS.items():
        read = _read_by(globs) - NOT_PASSED
        passed = set(services[service].get("environment") or {})
        assert not read - passed, f"{service} reads {sorted(read - passed)} but compose does not pass them"
    assert {"ENGINE_WORKERS", "ENGINE_ENCODER", "LOG_LEVEL"} <= set(services["engine"]["environment"])
    assert {"CACHE_CHAT_ID", "BOT_STATE", "WEBHOOK_SECRET", "ALBUM_SIZE", "ENGINE_TIMEOUT"} <= set(
        services["bot"]["environment"])
    assert {"TRAIN_TOPIC", "LOG_LEVEL"} <= set(services["trainer"]["environment"])


def test_values_that_code_parses_always_have_a_default() -> None:
    # `ENGINE_WORKERS: ${ENGINE_WORKERS}` with an empty .env line would reach int("") and crash the engine.
    for name, svc in _compose()["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            for var, op in re.findall(r"\$\{([A-Z0-9_]+)(:[-?]|-|\?)?", str(value)):
                secret_or_optional = var in {"REDIS_PASSWORD", "TELEGRAM_TOKEN"}
                assert op or secret_or_optional, f"{name}.{key}: ${{{var}}} has no default"


def test_every_variable_is_documented() -> None:
    documented = _documented()
    text = (ROOT / "docker-compose.yml").read_text() + (ROOT / "docker-compose.webhook.yml").read_text()
    used = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]+)", text))  # $${X} is the container shell's
    for svc in _compose()["services"].values():
        env = svc.get("environment") or {}
        used |= set(env)
    code_vars: set[str] = set()
    for package in ("engine", "bot", "train", "space"):
        code_vars |= _read_by([f"{package}/*.py"])
    # Set by torchrun for each rank (train/image/distributed.py), not by the user.
    code_vars -= {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"}
    # Set inside the redis containers for their healthcheck (redis-cli's password variable).
    used -= {"REDISCLI_AUTH"}
    missing = sorted((used | code_vars) - documented)
    assert not missing, f"undocumented in .env.example: {missing}"
    assert len(code_vars) > 15  # the scan really found the code's variables


def test_only_the_api_is_published_and_the_webhook_in_webhook_mode() -> None:
    services = _compose()["services"]
    for name in ("redis", "redis-cache", "trainer", "bot"):
        assert "ports" not in services[name], name  # issue 28: the bot published 8443 in polling mode too
    assert services["engine"]["ports"] == ["${ENGINE_PORT:-8080}:8080"]
    assert services["engine"]["environment"]["ENGINE_METRICS_PORT"] == "9090"  # internal: never published
    assert services["bot"]["environment"]["WEBHOOK_PORT"] == "8443"
    webhook = _compose("docker-compose.webhook.yml")["services"]
    assert webhook == {"bot": {"ports": ["${WEBHOOK_PORT:-8443}:8443"]}}
    # The admin endpoints are on the internal port (issue 28), where the bot calls them.
    assert services["bot"]["environment"]["ENGINE_ADMIN_URL"] == "http://engine:9090"
    # Redis has a password, and every service's REDIS_URL carries it.
    for name in ("engine", "bot", "trainer"):
        assert services[name]["environment"]["REDIS_URL"] == "redis://:${REDIS_PASSWORD}@redis:6379/0"
    assert services["engine"]["environment"]["ENGINE_CACHE_REDIS_URL"] == \
        "redis://:${REDIS_PASSWORD}@redis-cache:6379/0"


def test_redis_passwords_are_on_no_command_line() -> None:
    """Issue 28: `--requirepass <password>` showed the password to anyone who can list processes."""
    services = _compose()["services"]
    for name in ("redis", "redis-cache"):
        command = services[name]["command"]
        assert not any("${REDIS_PASSWORD" in str(part) or part.lstrip("-") == "requirepass"
                       for part in command), command
        script = command[2]
        # The container's shell writes the config (owner-only) and execs redis-server on it.
        assert command[:2] == ["sh", "-c"] and "umask 077" in script and "requirepass" in script
        assert '"$$REDIS_PASSWORD"' in script and "exec redis-server" in script
        assert services[name]["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")


def test_the_answer_cache_cannot_evict_state_locks_or_jobs() -> None:
    """Issue 28: the engine cached every distinct query in the one Redis that also held the bot's state,
    the retrain lock and the job queue, with no maxmemory and append-only on."""
    services = _compose()["services"]
    cache = services["redis-cache"]["command"]
    assert cache[cache.index("--maxmemory") + 1] == "${CACHE_REDIS_MAXMEMORY:-256mb}"
    assert cache[cache.index("--maxmemory-policy") + 1] == "allkeys-lru"
    assert cache[cache.index("--appendonly") + 1] == "no" and cache[cache.index("--save") + 1] == ""
    assert "volumes" not in services["redis-cache"]
    state = services["redis"]["command"]
    assert state[state.index("--maxmemory-policy") + 1] == "noeviction" and "--maxmemory" not in state
    # Nothing but the engine's cache uses the evicting Redis.
    for name, svc in services.items():
        for key, value in (svc.get("environment") or {}).items():
            if "@redis-cache:" in str(value):
                assert (name, key) == ("engine", "ENGINE_CACHE_REDIS_URL")


def test_every_service_is_hardened() -> None:
    """Issue 28: no mem_limit, pids_limit, read_only or cap_drop anywhere."""
    for name, svc in _compose()["services"].items():
        assert svc.get("read_only") is True, name
        assert svc.get("cap_drop") == ["ALL"], name
        assert "no-new-privileges:true" in svc.get("security_opt", []), name
        assert "/tmp" in svc.get("tmpfs", []), name
        assert re.fullmatch(r"\$\{[A-Z_]+_MEM_LIMIT:-\d+[mg]\}", str(svc.get("mem_limit"))), name
        assert isinstance(svc.get("pids_limit"), int) and 0 < svc["pids_limit"] <= 512, name
    # Without capabilities the redis image cannot step down from root itself: it starts as its user.
    for name in ("redis", "redis-cache"):
        assert _compose()["services"][name]["user"] == "999:1000"


def test_images_install_from_the_lock_and_own_their_volumes() -> None:
    dockerfiles = {p.name: p.read_text() for p in (ROOT / "docker").glob("Dockerfile.*")}
    assert set(dockerfiles) == {"Dockerfile.serve", "Dockerfile.train"}
    for name, text in dockerfiles.items():
        assert 'pip install --constraint requirements.lock "' in text, name
        assert "COPY requirements.lock" in text, name
        # /models exists in the image, owned by the app user before USER: a new named volume takes its owner.
        mkdir = text.index("mkdir -p /models")
        assert "chown app:app /models" in text[mkdir:] and mkdir < text.index("USER app"), name
        assert "useradd --create-home --uid 10001 app" in text, name
        # pyproject's license-files: a build without LICENSE fails.
        assert "COPY requirements.lock pyproject.toml README.md LICENSE ./" in text, name
    # RETRAIN_MODE=arq in compose: the bot's image and the worker's carry the optional arq extra.
    assert {_compose()["services"][s]["environment"]["RETRAIN_MODE"] for s in ("bot", "trainer")} == {"arq"}
    assert '".[engine,bot,arq]"' in dockerfiles["Dockerfile.serve"]
    assert '".[train,engine,arq]"' in dockerfiles["Dockerfile.train"]
    assert "torch" not in dockerfiles["Dockerfile.serve"].split("FROM", 1)[1].replace("no torch", "")
    train = dockerfiles["Dockerfile.train"]
    assert "ARG TORCH_INDEX_URL" in train and "grep -E '^torch==' requirements.lock" in train
    assert "torch==2.14.1" in (ROOT / "requirements.lock").read_text()
    assert "COPY topics ./topics" in train  # TRAIN_TOPIC=/app/topics/barcelona.toml
    build = _compose()["services"]["trainer"]["build"]
    assert build["args"] == {"TORCH_INDEX_URL": "${TORCH_INDEX_URL:-}"}


def test_dockerignore_keeps_secrets_and_bulk_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".git", ".venv", "models", "var", "**/__pycache__"} <= ignored
    needed = {"requirements.lock", "pyproject.toml", "README.md", "LICENSE", "space", "engine", "bot",
              "train", "topics"}
    assert not needed & ignored


def test_gpu_override_reserves_the_gpu_for_the_trainer() -> None:
    override = _compose("docker-compose.gpu.yml")["services"]
    assert set(override) == {"trainer"}
    devices = override["trainer"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    # The GPU image: CUDA torch (no CPU wheel index) and ONNX Runtime's CUDA build, pinned, swapped in only
    # for GPU=1, so the CPU image stays as it was.
    assert override["trainer"]["build"]["args"] == {"GPU": "1", "TORCH_INDEX_URL": ""}
    train = (ROOT / "docker" / "Dockerfile.train").read_text()
    assert "ARG GPU=0" in train and "COPY requirements-gpu.lock ./" in train
    swap = train.index('if [ "$GPU" = 1 ]')
    assert "pip uninstall -y onnxruntime && pip install --no-deps -r requirements-gpu.lock" in train[swap:]
    pins = [line for line in (ROOT / "requirements-gpu.lock").read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    assert pins == ["onnxruntime-gpu==1.31.1"]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["gpu"]
    assert [Requirement(r).name for r in extra] == ["onnxruntime-gpu"]
    assert all(Requirement(r).specifier.contains("1.31.1") for r in extra)
