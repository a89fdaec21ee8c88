"""Bundle announcements over Redis pub/sub: publish a version once, every engine replica switches to it.

The ACTIVE file stays the source of truth (engines also poll it); an announcement only makes replicas
that share one Redis switch at once instead of at their next poll. Publishing never fails the caller:
with Redis down the poll still gets there.

Redis is not trusted to choose a bundle: a replica follows an announcement only to the version ACTIVE
names (what the trainer announces after activating, re-read from the shared models folder, which Redis
cannot write), or, for an admin's reload of another published version, when the message is signed with
the replicas' admin token (HMAC-SHA256 over version, origin and time, :data:`MAX_AGE_S` old at most). So
whoever can publish on Redis can at most make replicas re-read ACTIVE.

``python -m space.announce --models DIR`` announces the ACTIVE version (``REDIS_URL`` from the
environment); ``--bundle-version V`` announces another one (``--version`` prints the program's).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from space.cli import Parser
from space.envvars import text
from space.logs import env_secrets, setup_logging

log = logging.getLogger(__name__)

CHANNEL = "topicspace:bundle"
# A signed announcement older (or newer: clocks differ) than this is refused: a recorded one cannot be
# replayed later to switch replicas back.
MAX_AGE_S = 300.0


@dataclass(frozen=True)
class Announcement:
    """One message on the channel: switch to ``version`` (``origin`` names the sender, for logs).

    ``sent`` and ``signature`` are set by :meth:`signed` (an admin's switch to a version that may not be
    ACTIVE); an unsigned announcement is followed only to the ACTIVE version.
    """

    version: str
    origin: str = ""
    sent: float = 0.0
    signature: str = ""

    def _mac(self, key: str) -> str:
        payload = json.dumps([self.version, self.origin, self.sent]).encode("utf-8")
        return hmac.new(key.encode("utf-8"), payload, hashlib.sha256).hexdigest()

    def signed(self, key: str, now: float | None = None) -> Announcement:
        """This announcement, stamped now and signed with ``key`` (the replicas' admin token)."""
        stamped = Announcement(self.version, self.origin, time.time() if now is None else now)
        return Announcement(stamped.version, stamped.origin, stamped.sent, stamped._mac(key))

    def verified(self, key: str | None, now: float | None = None) -> bool:
        """Whether the signature is ``key``'s and the message is at most :data:`MAX_AGE_S` old."""
        if not key or not self.signature:
            return False
        now = time.time() if now is None else now
        return abs(now - self.sent) <= MAX_AGE_S and hmac.compare_digest(self._mac(key), self.signature)

    def encode(self) -> bytes:
        """The wire form (JSON)."""
        payload: dict[str, object] = {"version": self.version, "origin": self.origin}
        if self.signature:
            payload |= {"sent": self.sent, "signature": self.signature}
        return json.dumps(payload).encode("utf-8")

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
        sent, signature = payload.get("sent", 0.0), payload.get("signature", "")
        if not isinstance(sent, int | float) or not isinstance(signature, str):
            return None
        return cls(version=version, origin=str(payload.get("origin") or "")[:200], sent=float(sent),
                   signature=signature[:128])


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
