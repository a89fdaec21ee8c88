"""An aiohttp client for the engine's HTTP API: failures become two small exceptions, answers typed objects.

The answers are parsed by :mod:`bot.engine_answers`; a body of the wrong shape raises its
``MalformedAnswer``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import quote

import aiohttp

from bot.engine_answers import (
    ImageAnswer,
    RelatedAnswer,
    ScoredWord,
    Stats,
    Switch,
    Versions,
    parse_hashtags,
    parse_images,
    parse_related,
    parse_similar,
    parse_stats,
    parse_switch,
    parse_versions,
)

log = logging.getLogger(__name__)

# Engine error codes that mean "try again later" rather than "your request is wrong".
_TRANSIENT_CODES = frozenset({"busy", "no_bundle", "bundle_invalid"})


def image_path(image_id: str) -> str:
    """The engine path of an image file: the id as one path segment (a '/' in it is %2F, as the engine's
    own ``url`` writes it; ``quote``'s default keeps '/', which the engine reads as two segments)."""
    return "/v1/images/" + quote(image_id, safe="")


class EngineUnavailable(Exception):
    """The engine is down, slow, overloaded or has no bundle: the user should retry shortly."""


class NoBundle(EngineUnavailable):
    """The engine runs but has no bundle to serve yet (``503 no_bundle``): a first deploy."""


class EngineRequestError(Exception):
    """The engine refused the request (4xx) with a code the bot can explain."""

    def __init__(self, code: str, message: str, status: int, unknown: list[str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.unknown = unknown or []


class ReportMissing(Exception):
    """The bundle's report has no such file (yet)."""


class EngineClient:
    """Talks to one engine; the session is opened in ``start()`` (post_init) and closed in ``close()``."""

    def __init__(
        self,
        base_url: str,
        timeout_s: float = 10.0,
        admin_token: str | None = None,
        stats_ttl_s: float = 30.0,
        admin_url: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        # The admin endpoints may live on the engine's internal port only (ENGINE_METRICS_PORT).
        self.admin_url = (admin_url or base_url).rstrip("/")
        self.timeout_s = timeout_s
        self.admin_token = admin_token
        self.stats_ttl_s = stats_ttl_s
        self._session: aiohttp.ClientSession | None = None
        self._stats: Stats | None = None
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
        url = f"{self.admin_url if path.startswith('/v1/admin/') else self.base_url}{path}"
        clean = {k: str(v) for k, v in (params or {}).items() if v is not None}
        try:
            async with self._session.request(method, url, params=clean, data=data, headers=headers) as resp:
                body = await resp.read()
                if resp.status >= 500 or resp.status == 429:
                    log.warning("engine %s %s answered %d", method, path, resp.status)
                    if self._payload(body).get("error") == "no_bundle":
                        raise NoBundle("no_bundle")
                    raise EngineUnavailable(f"engine answered {resp.status}")
                if resp.status >= 400:
                    self._raise_refusal(resp.status, body)
                return body if raw else json.loads(body)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.warning("engine %s %s failed: %s", method, path, type(exc).__name__)
            raise EngineUnavailable(str(exc) or type(exc).__name__) from exc

    @staticmethod
    def _payload(body: bytes) -> dict[str, Any]:
        """An error body's JSON object ({} when it is not one)."""
        try:
            payload = json.loads(body)
        except ValueError:
            return {}
        return payload if isinstance(payload, dict) else {}

    def _raise_refusal(self, status: int, body: bytes) -> None:
        payload = self._payload(body)
        code = str(payload.get("error") or f"http_{status}")
        if code == "no_bundle":
            raise NoBundle(code)
        if code in _TRANSIENT_CODES:
            raise EngineUnavailable(code)
        unknown = payload.get("unknown")
        raise EngineRequestError(
            code, str(payload.get("message") or code), status, unknown if isinstance(unknown, list) else None
        )

    async def related(self, query: str, k: int = 10) -> RelatedAnswer:
        """Nearest words to a query."""
        return parse_related(await self._request("GET", "/v1/related", params={"q": query, "k": k}))

    async def images(self, query: str, k: int = 6, offset: int = 0, lang: str | None = None) -> ImageAnswer:
        """Nearest images to a query, from ``offset`` on (among the posts in ``lang`` when given)."""
        params = {"q": query, "k": k, "offset": offset, "lang": lang}
        return parse_images(await self._request("GET", "/v1/images", params=params))

    async def _post_image(self, path: str, image: bytes, k: int, lang: str | None = None) -> Any:
        headers = {"Content-Type": "application/octet-stream"}
        params: dict[str, Any] = {"k": k, **({"lang": lang} if lang else {})}
        return await self._request("POST", path, params=params, data=image, headers=headers)

    async def hashtags(self, image: bytes, k: int = 8, lang: str | None = None) -> list[ScoredWord]:
        """The words people would write under an image (in ``lang``'s words when the corpus has them)."""
        return parse_hashtags(await self._post_image("/v1/hashtags", image, k, lang))

    async def similar(self, image: bytes, k: int = 6) -> ImageAnswer:
        """Nearest images to an image."""
        return parse_similar(await self._post_image("/v1/similar", image, k))

    async def image_bytes(self, image_id: str, size: int | None = None) -> bytes:
        """The image file (a thumbnail of at most ``size`` pixels when given)."""
        result: bytes = await self._request("GET", image_path(image_id), params={"size": size}, raw=True)
        return result

    async def stats(self, fresh: bool = False) -> Stats:
        """The active bundle's statistics, cached for a few seconds."""
        now = time.monotonic()
        if fresh or self._stats is None or now - self._stats_at > self.stats_ttl_s:
            self._stats = parse_stats(await self._request("GET", "/v1/stats"))
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

    async def _admin(self, method: str, path: str, params: dict[str, Any] | None = None) -> Any:
        headers = {"Authorization": f"Bearer {self.admin_token}"} if self.admin_token else {}
        return await self._request(method, path, params=params, headers=headers)

    async def reload(self) -> Switch:
        """Ask the engine to load the newly active bundle."""
        result = parse_switch(await self._admin("POST", "/v1/admin/reload"))
        self._stats = None
        return result

    async def versions(self) -> Versions:
        """The published bundles (newest first) and the served version."""
        return parse_versions(await self._admin("GET", "/v1/admin/versions"))

    async def activate(self, version: str) -> Switch:
        """Make ``version`` the active bundle and serve it (a rollback)."""
        result = parse_switch(await self._admin("POST", "/v1/admin/activate", {"version": version}))
        self._stats = None
        return result
