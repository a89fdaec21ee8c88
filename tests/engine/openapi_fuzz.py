"""Hostile requests for every operation of the engine's ``GET /openapi.json``: hypothesis strategies.

For each path and method the document lists, a request is drawn from the operation's own description:
its query parameters from their JSON schemas (``hypothesis_jsonschema.from_schema``: valid values, bounds
included), mixed with what a hostile client sends instead (numbers out of range, Unicode digits such as
"²", floats, huge integers, empty, whitespace, control characters, long and non-Latin text, repeated and
unknown parameters); path parameters as any text (slashes, dots, percent signs, real image ids of the
bundle); headers (non-UTF-8 ``Authorization`` bytes, odd ``Content-Type``, ``Content-Encoding``,
``Range``, ``Accept-Encoding``, forwarded-for lists); and bodies for operations that take one (random
bytes, truncated and tiny images, malformed multipart, gzip that is not gzip).

Requests go over a real socket with ``http.client`` so that any byte can be a header's. Used by
``tests/engine/test_api_fuzz.py`` (CI) and ``scripts/fuzz_api.py`` (longer runs, the slowest request).
"""

from __future__ import annotations

import http.client
import io
import json
import random
import string
import time
import zlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from PIL import Image

# A long word of distinct letters: its spelling search was quadratic (a repeated letter has few deletions).
_LONG_WORD = "".join(random.Random(28).choices(string.ascii_lowercase, k=499))
# Text that has broken parsers before: Unicode digits, signs, exponents, controls, separators, markup.
HOSTILE_TEXT = [_LONG_WORD, _LONG_WORD[:300], _LONG_WORD[:40] + " " + _LONG_WORD[40:80],
    "", " ", "²", "١٠", "10²", "-1", "-0", "+5", "0x10", "1e309", "1e3", "NaN", "inf", "-inf", "9" * 40,
    "1_000", " 10", "10 ", "0" * 30 + "1", "\x00", "\t", "\r\n", "\u202e", "\ufeff", "\ud83d", "%", "%00",
    "%ff", "..", "../../etc/passwd", "/", "\\", "<script>alert(1)</script>", "' OR 1=1 --", "{}", "[]",
    "null", "true", "a" * 499, "q" * 600, "dog " * 120, "-dog -cat -", "-", "--", "dög cafè ñoño", "狗",
    "🐕" * 20, "dgo baech bicyle", "x" * 31 + " " + "y" * 29,
]
HOSTILE_NUMBERS = [0, -1, 1, 2, 99, 100, 101, 1000, 1001, 10**6, 2**31, 2**63, -(2**63), 10**30]


def _tiny_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (3, 2), (1, 2, 3)).save(out, format="PNG")
    return out.getvalue()


def _tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 99, 199)).save(out, format="JPEG")
    return out.getvalue()


BODIES = [
    b"", b"\x00", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF89a", b"RIFF\x00\x00\x00\x00WEBP",
    _tiny_png(), _tiny_jpeg(), _tiny_jpeg()[:60], _tiny_png()[:-12], b"BM" + b"\xff" * 60,
    b"II*\x00" + b"\x00" * 40, zlib.compress(b"\x00" * 100_000),
]


@dataclass
class Operation:
    """One method on one path of the document, with what it takes."""

    method: str
    path: str
    parameters: list[dict[str, Any]] = field(default_factory=list)
    body_types: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


def operations(spec: dict[str, Any]) -> list[Operation]:
    """Every operation of an OpenAPI 3 document."""
    ops = []
    for path, item in sorted(spec["paths"].items()):
        for method, op in sorted(item.items()):
            body = (op.get("requestBody") or {}).get("content") or {}
            ops.append(Operation(method.upper(), path, list(op.get("parameters") or []), sorted(body)))
    return ops


@dataclass
class Request:
    """One drawn request."""

    method: str
    target: str  # path and query, already encoded
    headers: list[tuple[str, bytes]]
    body: bytes | None

    def describe(self) -> str:
        body = "" if self.body is None else f" body={self.body[:60]!r}({len(self.body)} B)"
        return f"{self.method} {self.target[:300]} headers={self.headers!r}{body}"


def _query_value(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    valid = from_schema(schema).map(lambda v: json.dumps(v) if not isinstance(v, str) else v)
    return st.one_of(
        valid,
        st.sampled_from(HOSTILE_TEXT),
        st.sampled_from(HOSTILE_NUMBERS).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=40),
        st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=600),
    )


def _path_value(known_ids: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(known_ids) if known_ids else st.nothing(),
        st.sampled_from(known_ids).map(lambda i: i + "/x") if known_ids else st.nothing(),
        st.sampled_from(HOSTILE_TEXT).filter(bool),
        st.sampled_from(["stats.json", "tsne_layout.json", "../manifest.json", "a/../../b", "index.html",
                         "app.js", "x.png", "%2e%2e%2fmanifest.json"]),
        st.text(min_size=1, max_size=300),
    )


HEADER_BYTES = st.binary(max_size=80).filter(lambda b: b"\r" not in b and b"\n" not in b)


def _headers(token: str, has_body: bool) -> st.SearchStrategy[list[tuple[str, bytes]]]:
    auth = st.one_of(
        st.just(b"Bearer " + token.encode() + b"x"),
        st.sampled_from([b"Bearer \xff", b"Bearer", b"Basic YWRtaW46YWRtaW4=", b"Bearer " + b"a" * 4000,
                         b"bearer " + token[:-1].encode(), b"\xc3\x28", b"Bearer \x80\x80"]),
        HEADER_BYTES.map(lambda b: b"Bearer " + b),
    )
    pairs = st.one_of(
        st.tuples(st.just("Authorization"), auth),
        st.tuples(st.just("Accept-Encoding"),
                  st.sampled_from([b"gzip", b"br", b"*;q=0", b"\xff", b"x" * 200])),
        st.tuples(st.just("Range"), st.sampled_from([b"bytes=0-0", b"bytes=-1", b"bytes=99999999-",
                                                     b"bytes=5-2", b"bytes=0-1,2-3,4-5", b"pages=1"])),
        st.tuples(st.just("If-None-Match"), HEADER_BYTES),
        st.tuples(st.just("If-Modified-Since"),
                  st.sampled_from([b"yesterday", b"Thu, 01 Jan 1970 00:00:00 GMT", b"\xff\xfe"])),
        st.tuples(st.just("X-Forwarded-For"), st.sampled_from([b"1.2.3.4, " * 50, b"::1", b"\xff"])),
        st.tuples(st.just("Accept-Language"), HEADER_BYTES),
        st.tuples(st.just("Cookie"), HEADER_BYTES),
    )
    if has_body:
        pairs = st.one_of(
            pairs,
            st.tuples(st.just("Content-Type"), st.sampled_from([
                b"application/octet-stream", b"image/jpeg", b"multipart/form-data",
                b"multipart/form-data; boundary=", b"multipart/form-data; boundary=zz",
                b"multipart/mixed; boundary=zz", b"text/plain; charset=\xff", b"application/json",
                b"\xff/\xff"])),
            st.tuples(st.just("Content-Encoding"),
                      st.sampled_from([b"gzip", b"deflate", b"br", b"identity", b"gzip, gzip", b"\xff"])),
        )
    return st.lists(pairs, max_size=4, unique_by=lambda kv: kv[0])


def _multipart(fields: list[tuple[str, bytes]], boundary: str = "zz") -> bytes:
    head = '--{}\r\nContent-Disposition: form-data; name="{}"\r\n\r\n'
    parts = [head.format(boundary, name).encode() + value + b"\r\n" for name, value in fields]
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


BODY = st.one_of(
    st.sampled_from(BODIES),
    st.binary(max_size=2048),
    st.lists(st.tuples(st.sampled_from(["image", "other", "", "image\x00"]), st.sampled_from(BODIES)),
             max_size=3).map(_multipart),
)


@st.composite
def requests(draw: st.DrawFn, op: Operation, known_ids: list[str], token: str) -> Request:
    """A hostile request for ``op``."""
    path = op.path
    query: list[tuple[str, str]] = []
    for param in op.parameters:
        where, name = param["in"], param["name"]
        if where == "path":
            value = draw(_path_value(known_ids))
            # Usually one path segment (as a client should send it); sometimes raw, '/' and all.
            raw = draw(st.booleans())
            encoded = quote(value, safe="/%" if raw else "", errors="surrogatepass")
            path = path.replace("{" + name + "}", encoded or "x")
        elif where == "query" and (param.get("required") or draw(st.booleans())):
            for _ in range(draw(st.integers(1, 2))):  # a repeated parameter now and then
                query.append((name, draw(_query_value(param.get("schema") or {}))))
    if draw(st.integers(0, 9)) == 0:
        query.append((draw(st.text(min_size=1, max_size=10)), draw(st.text(max_size=20))))
    body = None
    if op.body_types:
        body = draw(BODY)
    headers = draw(_headers(token, body is not None))
    if body is not None and not any(k == "Content-Type" for k, _ in headers) and op.body_types:
        headers.append(("Content-Type", draw(st.sampled_from(op.body_types)).encode()))
    qs = urlencode(query, encoding="utf-8", errors="surrogatepass") if query else ""
    return Request(op.method, path + (f"?{qs}" if qs else ""), headers, body)


HOSTILE_HEADERS: list[tuple[str, bytes]] = [
    ("Authorization", b"Bearer \xff"), ("Authorization", b"Bearer \x80\x80"), ("Authorization", b"\xc3\x28"),
    ("Authorization", b"Bearer " + b"a" * 4000), ("Authorization", b"Basic YWRtaW46YWRtaW4="),
    ("Accept-Encoding", b"\xff"), ("Range", b"bytes=5-2"), ("Range", b"bytes=99999999-"),
    ("If-Modified-Since", b"\xff\xfe"), ("X-Forwarded-For", b"1.2.3.4, " * 50), ("Cookie", b"\xff=\xfe"),
]
BODY_HEADERS: list[tuple[str, bytes]] = [
    ("Content-Type", b"multipart/form-data"), ("Content-Type", b"multipart/form-data; boundary="),
    ("Content-Type", b"multipart/mixed; boundary=zz"), ("Content-Type", b"text/plain; charset=\xff"),
    ("Content-Encoding", b"gzip"), ("Content-Encoding", b"deflate"), ("Content-Encoding", b"br"),
    ("Content-Encoding", b"\xff"),
]


def sweep(op: Operation, known_ids: list[str], token: str) -> list[Request]:
    """Every hostile value in every parameter (the others plain), every hostile header and body: the
    systematic half of the fuzzer (random draws would meet "²" in ``k`` only now and then)."""
    plain = {"q": "dog", "id": known_ids[0] if known_ids else "x", "name": "stats.json", "tag": "x"}
    plain_body = BODIES[7]  # a real JPEG

    def build(values: dict[str, str], headers: list[tuple[str, bytes]], body: bytes | None) -> Request:
        path, query = op.path, []
        for param in op.parameters:
            name = param["name"]
            if param["in"] == "path":
                value = values.get(name, plain.get(name, "x"))
                path = path.replace("{" + name + "}", quote(value, safe="", errors="surrogatepass") or "x")
            elif name in values or param.get("required"):
                query.append((name, values.get(name, plain.get(name, "1"))))
        qs = urlencode(query, encoding="utf-8", errors="surrogatepass")
        if body is not None and not any(k == "Content-Type" for k, _ in headers):
            headers = [*headers, ("Content-Type", op.body_types[0].encode())]
        return Request(op.method, path + (f"?{qs}" if qs else ""), headers, body)

    body = plain_body if op.body_types else None
    out = []
    values = [*HOSTILE_TEXT, *map(str, HOSTILE_NUMBERS)]
    for param in op.parameters:
        for value in values:
            out.append(build({param["name"]: value}, [], body))
    for header in HOSTILE_HEADERS:
        out.append(build({}, [header], body))
    if op.body_types:
        for raw in BODIES:
            for header in [("Content-Type", t.encode()) for t in op.body_types] + BODY_HEADERS:
                out.append(build({}, [header], raw))
    return out


@dataclass
class Answer:
    """What the engine answered: status, body, seconds."""

    status: int
    body: bytes
    seconds: float
    content_type: str


def send(host: str, port: int, request: Request, timeout: float = 30.0) -> Answer:
    """``request`` over a fresh connection, any header bytes as they are."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    started = time.perf_counter()
    try:
        conn.putrequest(request.method, request.target, skip_accept_encoding=True)
        for name, value in request.headers:
            conn.putheader(name, value)
        if request.body is not None:
            conn.putheader("Content-Length", str(len(request.body)))
        conn.endheaders(request.body)
        response = conn.getresponse()
        body = response.read()
        return Answer(response.status, body, time.perf_counter() - started,
                      response.getheader("Content-Type") or "")
    finally:
        conn.close()
