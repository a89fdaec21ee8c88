"""The OpenAPI 3 description of the engine's HTTP API (kept next to the routes it describes)."""

from __future__ import annotations

from typing import Any

from space.version import __version__


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _param(name: str, schema: dict[str, Any], description: str, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema, "description": description}


BINARY = {"type": "string", "format": "binary"}
PATH_NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
TEXT = {"text/plain": {"schema": {"type": "string"}}}
HTML = {"text/html": {"schema": {"type": "string"}}}
ERRORS = {
    "400": _json(_ref("Error"), "Bad input (empty query, bad parameter, bad image)"),
    "413": _json(_ref("Error"), "Upload too large"),
    "503": _json(_ref("Error"), "No bundle loaded, or busy"),
}
K = _param("k", {"type": "integer", "minimum": 1, "maximum": 100, "default": 10}, "How many results")
Q = _param("q", {"type": "string"}, "Words to combine; '-word' subtracts a word", required=True)
IMAGE_BODY = {
    "required": True,
    "content": {
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {"image": {"type": "string", "format": "binary"}}}
        },
    },
}


def spec() -> dict[str, Any]:
    """The OpenAPI document."""
    scored_word = {"type": "object", "properties": {"word": {"type": "string"}, "score": {"type": "number"}}}
    image_hit = {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "score": {"type": "number"}, "caption": {"type": "string"},
            "url": {"type": "string"}, "lang": {"type": "string", "nullable": True},
        },
    }
    unknown = {"type": "array", "items": {"type": "string"}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "topicspace engine", "version": __version__},
        "paths": {
            "/v1/related": {"get": {
                "summary": "Words near the query", "parameters": [Q, K],
                "responses": {"200": _json({"type": "object", "properties": {
                    "words": {"type": "array", "items": _ref("ScoredWord")}, "unknown": unknown,
                    "version": {"type": "string"}}}), **ERRORS},
            }},
            "/v1/images": {"get": {
                "summary": "Images near the query",
                "parameters": [
                    Q, K, _param("offset", {"type": "integer", "minimum": 0, "default": 0}, "Skip this many"),
                    _param("lang", {"type": "string"}, "Only items in this language"),
                ],
                "responses": {"200": _json({"type": "object", "properties": {
                    "images": {"type": "array", "items": _ref("ImageHit")}, "unknown": unknown,
                    "confident": {"type": "boolean"}, "version": {"type": "string"}}}), **ERRORS},
            }},
            "/v1/images/{id}": {"get": {
                "summary": "An image file, or a JPEG thumbnail with ?size=N",
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                    _param("size", {"type": "integer", "minimum": 1}, "Longest side of a JPEG thumbnail"),
                ],
                "responses": {"200": {"description": "The image", "content": {"image/*": {"schema": BINARY}}},
                              "404": _json(_ref("Error"), "No such image")},
            }},
            "/v1/hashtags": {"post": {
                "summary": "Words for a photo", "parameters": [K], "requestBody": IMAGE_BODY,
                "responses": {"200": _json({"type": "object", "properties": {
                    "hashtags": {"type": "array", "items": _ref("ScoredWord")}}}), **ERRORS},
            }},
            "/v1/similar": {"post": {
                "summary": "Images like a photo", "parameters": [K], "requestBody": IMAGE_BODY,
                "responses": {"200": _json({"type": "object", "properties": {
                    "images": {"type": "array", "items": _ref("ImageHit")}}}), **ERRORS},
            }},
            "/v1/similar/{id}": {"get": {
                "summary": "A corpus photo (its caption, url, lang) and the images nearest to it",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
                               K],
                "responses": {"200": _json({"type": "object", "properties": {
                    "image": _ref("ImageHit"), "images": {"type": "array", "items": _ref("ImageHit")},
                    "version": {"type": "string"}}}),
                              "404": _json(_ref("Error"), "No such image"), **ERRORS},
            }},
            "/v1/stats": {"get": {"summary": "Corpus and filter statistics of the active bundle",
                                  "responses": {"200": _json({"type": "object"}), **ERRORS}}},
            "/v1/report/{name}": {"get": {
                "summary": "A file of the bundle's report/ folder",
                "parameters": [PATH_NAME],
                "responses": {"200": {"description": "The file"},
                              "404": _json(_ref("Error"), "No such file")},
            }},
            "/v1/admin/reload": {"post": {
                "summary": "Switch to the ACTIVE bundle (or ?version=); announced to the other replicas",
                "parameters": [_param("version", {"type": "string"}, "A published version")],
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}),
                              "401": _json(_ref("Error"), "Bad token"),
                              "403": _json(_ref("Error"), "Admin disabled"), **ERRORS},
            }},
            "/v1/admin/versions": {"get": {
                "summary": "Published bundles, newest first, with the active and served version, and "
                           "last_error: why the last bundle tried was refused",
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}),
                              "401": _json(_ref("Error"), "Bad token"),
                              "403": _json(_ref("Error"), "Admin disabled")},
            }},
            "/v1/admin/activate": {"post": {
                "summary": "Make ?version= the ACTIVE bundle and serve it (rollback); announced to replicas",
                "parameters": [_param("version", {"type": "string"}, "A published version")],
                "security": [{"bearer": []}],
                "responses": {"200": _json({"type": "object"}),
                              "401": _json(_ref("Error"), "Bad token"),
                              "403": _json(_ref("Error"), "Admin disabled"),
                              "404": _json(_ref("Error"), "unknown_version: no such published version"),
                              **ERRORS},
            }},
            "/healthz": {"get": {"summary": "Liveness; status ok or degraded, the bundle's version, "
                                 "topicspace_version, cache and bus state",
                                 "responses": {"200": _json({"type": "object"})}}},
            "/readyz": {"get": {"summary": "Readiness: 200 once a bundle is served, 503 no_bundle before",
                                "responses": {"200": _json({"type": "object"}),
                                              "503": _json(_ref("Error"), "No bundle served yet")}}},
            "/metrics": {"get": {"summary": "Prometheus metrics (on ENGINE_METRICS_PORT only, when set)",
                                 "responses": {"200": {"description": "Prometheus text", "content": TEXT}}}},
            "/": {"get": {"summary": "The web page (search, photo map, analyses); ?q=&lang= open a search",
                          "responses": {"200": {"description": "HTML", "content": HTML}}}},
            "/static/{tag}/{name}": {"get": {
                "summary": "A file of the web page (immutable under the current tag)",
                "parameters": [{"name": "tag", "in": "path", "required": True, "schema": {"type": "string"}},
                               PATH_NAME],
                "responses": {"200": {"description": "The file"},
                              "404": _json(_ref("Error"), "No such file")},
            }},
            "/map.json": {"get": {
                "summary": "The web page's photo map: its tile pyramid's geometry and URLs, or (older "
                           "bundles) the mosaic's cells as photo ids, its sizes, sampling",
                "responses": {"200": _json({"type": "object"}),
                              "404": _json(_ref("Error"), "The bundle has no photo map"), **ERRORS},
            }},
            "/map/{version}/tiles/{z}/{x}/{y}.jpg": {"get": {
                "summary": "One JPEG tile of the served bundle's map (level z, column x, row y); immutable",
                "parameters": [{"name": n, "in": "path", "required": True,
                                "schema": {"type": "string" if n == "version" else "integer"}}
                               for n in ("version", "z", "x", "y")],
                "responses": {"200": {"description": "The tile", "content": {"image/jpeg": {}}},
                              "404": _json(_ref("Error"), "No such tile, or another version"), **ERRORS},
            }},
            "/map/{version}/cell/{col}/{row}": {"get": {
                "summary": "The photo id in a cell of the served bundle's map grid (null: an empty cell)",
                "parameters": [{"name": n, "in": "path", "required": True,
                                "schema": {"type": "string" if n == "version" else "integer"}}
                               for n in ("version", "col", "row")],
                "responses": {"200": _json({"type": "object",
                                            "properties": {"id": {"type": ["string", "null"]}}}),
                              "404": _json(_ref("Error"), "No map, or another version"), **ERRORS},
            }},
            "/openapi.json": {"get": {"summary": "This document",
                                      "responses": {"200": _json({"type": "object"})}}},
        },
        "components": {
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"}}},
                "ScoredWord": scored_word,
                "ImageHit": image_hit,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
