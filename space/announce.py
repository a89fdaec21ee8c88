"""Bundle announcements over Redis pub/sub: publish a version once, every engine replica switches to it.

The ACTIVE file stays the source of truth (engines also poll it); an announcement only makes replicas
that share one Redis switch at once instead of at their next poll. Publishing never fails the caller:
with Redis down the poll still gets there.

``python -m space.announce --models DIR`` announces the ACTIVE version (``REDIS_URL`` from the
environment); ``--bundle-version V`` announces another one (``--version`` prints the program's).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from space.cli import Parser
from space.envvars import text
from space.logs import env_secrets, setup_logging

log = logging.getLogger(__name__)

CHANNEL = "topicspace:bundle"


@dataclass(frozen=True)
class Announcement:
    """One message on the channel: switch to ``version`` (``origin`` names the sender, for logs)."""

    version: str
    origin: str = ""

    def encode(self) -> bytes:
        """The wire form (JSON)."""
        return json.dumps({"version": self.version, "origin": self.origin}).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes | str) -> Announcement | None:
        """Parse a message; None for anything malformed (a stray publisher must not crash a replica)."""
        try:
            payload = json.loads(data)
        except (ValueError, TypeError):
            return None
        if not isinstance(payload, dict):
            return None
        version = payload.get("version")
        if not isinstance(version, str) or not version or "/" in version or version.startswith("."):
            return None
        return cls(version=version, origin=str(payload.get("origin") or ""))


def default_origin() -> str:
    """Host and process id of the sender."""
    return f"{socket.gethostname()}:{os.getpid()}"


def announce(redis_url: str, version: str, *, channel: str = CHANNEL, timeout_s: float = 2.0) -> int:
    """Publish ``version``; the number of subscribers that got it, or -1 when Redis failed (logged)."""
    # Imported here: the core (space) does not depend on redis; the processes that announce (the trainer,
    # the engine) declare it in their extras.
    import redis
    from redis.exceptions import RedisError

    message = Announcement(version, default_origin()).encode()
    try:
        with redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s) as r:
            receivers = int(r.publish(channel, message))
    except (RedisError, OSError) as exc:
        log.warning("could not announce bundle %s (%s): replicas will find it by polling ACTIVE",
                    version, exc)
        return -1
    log.info("announced bundle %s to %d subscriber(s)", version, receivers)
    return receivers


def announce_from_env(version: str, env: Mapping[str, str] | None = None) -> int | None:
    """Announce when ``REDIS_URL`` is set (None when it is not): what the trainer calls after publishing."""
    url = (os.environ if env is None else env).get("REDIS_URL")
    return announce(url, version) if url else None


def build_parser() -> Parser:
    """The command line: the models folder, optionally a version; ``REDIS_URL`` from the environment."""
    p = Parser("space.announce", __doc__)
    p.add_argument("--models", type=Path, required=True, metavar="DIR", help="the models folder")
    p.add_argument("--bundle-version", dest="announce", default=None, metavar="VERSION",
                   help="the version to announce (default: the ACTIVE one)")
    p.variable("REDIS_URL", text(secret=True), None, "the Redis the engines subscribe to (required)")
    return p


def main(argv: list[str] | None = None) -> int:
    """Announce the ACTIVE (or the given) version; 1 when there is nothing to announce or Redis failed."""
    from space import bundle

    p = build_parser()
    a = p.parse(argv)
    setup_logging(p.log_settings(a), env_secrets(p.env))
    url = a.redis_url
    version = a.announce or bundle.active_version(a.models)
    if not url or not version:
        reason = "REDIS_URL is not set" if not url else f"no ACTIVE bundle in {a.models}"
        log.error("nothing to announce: %s", reason)
        return 1
    return 0 if announce(url, version) >= 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
