"""An aiohttp client for the engine's HTTP API, mapping its failures onto two small exceptions."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

log = logging.getLogger(__name__)

# Engine error codes that mean "try again later" rather than "your request is wrong".
_TRANSIENT_CODES = frozenset({"busy", "no_bundle", "bundle_invalid"})


class EngineUnavailable(Exception):
    """The engine is down, slow, overloaded or has no bundle: the user should retry shortly."""


class EngineRequestError(Exception):
    """The engine refused the request (4xx) with a code the bot can explain."""

    def __init__(self, code: str, message: str, status: int, unknown: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.unknown = unknown or []


class ReportMissing(Exception):
    """The bundle's report has no such file (yet)."""


@dataclass(frozen=True)
class ScoredWord:
    """A word and its similarity."""

    word: str
    score: float


@dataclass(frozen=True)
class ImageHit:
    """One image the engine ranked, with its caption and engine-relative URL."""

    id: str
    score: float
    caption: str
    url: str


@dataclass(frozen=True)
class ImageAnswer:
    """The engine's answer to an image search."""

    images: list[ImageHit]
    unknown: list[str]
    confident: bool
    version: str = ""


@dataclass(frozen=True)
class RelatedAnswer:
    """The engine's answer to a related-words query."""

    words: list[ScoredWord]
    unknown: list[str]


def _words(items: list[dict[str, Any]]) -> list[ScoredWord]:
    return [ScoredWord(str(w["word"]), float(w["score"])) for w in items]


def _images(items: list[dict[str, Any]]) -> list[ImageHit]:
    return [
        ImageHit(
            str(i["id"]), float(i.get("score", 0.0)), str(i.get("caption") or ""), str(i.get("url") or "")
        )
        for i in items
    ]


class EngineClient:
    """Talks to one engine; the session is opened in ``start()`` (post_init) and closed in ``close()``."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        admin_token: str | None = None,
        stats_ttl_s: float = 30.0,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.admin_token = admin_token
        self.stats_ttl_s = stats_ttl_s
        self._session: aiohttp.ClientSession | None = None
        self._stats: dict[str, Any] | None = None
        self._stats_at = 0.0

    async def start(self) -> None:
        """Open the HTTP session."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s))

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
        raw: bool = False,
    ) -> Any:
        if self._session is None:
            await self.start()
        assert self._session is not None
        url = f"{self.base_url}{path}"
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self._session.request(method, url, params=clean, data=data, headers=headers) as resp:
                body = await resp.read()
                if resp.status >= 500 or resp.status == 429:
                    log.warning("engine %s %s answered %d", method, path, resp.status)
                    raise EngineUnavailable(f"engine answered {resp.status}")
                if resp.status >= 400:
                    self._raise_refusal(resp.status, body)
                return body if raw else json.loads(body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("engine %s %s failed: %s", method, path, type(exc).__name__)
            raise EngineUnavailable(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _raise_refusal(status: int, body: bytes) -> None:
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        code = str(payload.get("error") or f"http_{status}")
        if code in _TRANSIENT_CODES:
            raise EngineUnavailable(code)
        unknown = payload.get("unknown")
        raise EngineRequestError(
            code, str(payload.get("message") or code), status, unknown if isinstance(unknown, list) else None
        )

    async def related(self, query: str, k: int = 10) -> RelatedAnswer:
        """Nearest words to a query."""
        data = await self._request("GET", "/v1/related", params={"q": query, "k": k})
        return RelatedAnswer(_words(data.get("words", [])), list(data.get("unknown", [])))

    async def images(self, query: str, k: int = 6, offset: int = 0) -> ImageAnswer:
        """Nearest images to a query, from ``offset`` on."""
        data = await self._request("GET", "/v1/images", params={"q": query, "k": k, "offset": offset})
        return ImageAnswer(
            _images(data.get("images", [])),
            list(data.get("unknown", [])),
            bool(data.get("confident", True)),
            str(data.get("version") or ""),
        )

    async def hashtags(self, image: bytes, k: int = 8) -> list[ScoredWord]:
        """Nearest words to an image."""
        data = await self._request(
            "POST",
            "/v1/hashtags",
            params={"k": k},
            data=image,
            headers={"Content-Type": "application/octet-stream"},
        )
        return _words(data.get("hashtags", []))

    async def similar(self, image: bytes, k: int = 6) -> ImageAnswer:
        """Nearest images to an image."""
        data = await self._request(
            "POST",
            "/v1/similar",
            params={"k": k},
            data=image,
            headers={"Content-Type": "application/octet-stream"},
        )
        return ImageAnswer(_images(data.get("images", [])), [], True, str(data.get("version") or ""))

    async def image_bytes(self, image_id: str, size: int | None = None) -> bytes:
        """The image file (a thumbnail of at most ``size`` pixels when given)."""
        path = f"/v1/images/{quote(image_id)}"
        result: bytes = await self._request("GET", path, params={"size": size}, raw=True)
        return result

    async def stats(self, fresh: bool = False) -> dict[str, Any]:
        """The active bundle's statistics, cached for a few seconds."""
        now = time.monotonic()
        if fresh or self._stats is None or now - self._stats_at > self.stats_ttl_s:
            self._stats = await self._request("GET", "/v1/stats")
            self._stats_at = now
        return self._stats

    async def report_file(self, name: str) -> bytes:
        """A file of the bundle's report; ``ReportMissing`` when it has none."""
        try:
            result: bytes = await self._request("GET", f"/v1/report/{quote(name)}", raw=True)
        except EngineRequestError as exc:
            if exc.status == 404:
                raise ReportMissing(name) from exc
            raise
        return result

    async def _admin(self, method: str, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        result: dict[str, Any] = await self._request(method, path, params=params, headers=headers)
        return result

    async def reload(self) -> dict[str, Any]:
        """Ask the engine to load the newly active bundle."""
        result = await self._admin("POST", "/v1/admin/reload")
        self._stats = None
        return result

    async def versions(self) -> dict[str, Any]:
        """The published bundles (newest first) with the active and served version."""
        return await self._admin("GET", "/v1/admin/versions")

    async def activate(self, version: str) -> dict[str, Any]:
        """Make ``version`` the active bundle and serve it (a rollback)."""
        result = await self._admin("POST", "/v1/admin/activate", {"version": version})
        self._stats = None
        return result
