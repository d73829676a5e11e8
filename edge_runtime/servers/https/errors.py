"""JSON error bodies of the HTTPS server: {"error": reason, "field": what is at fault}.

Every refusal names its field (a JSON path in the body, a header, "$" for the whole request)
so a client can tell what to fix; the status says which kind of refusal it is.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

# The statuses the endpoints answer with, and what each means here (openapi.json: the same).
STATUSES: dict[int, str] = {
    400: "malformed request: not JSON, not an object, or not UTF-8",
    401: "no valid bearer token, or a command whose signature envelope does not hold",
    403: "the token's role has no right to this (the rights table), or signed as another role",
    404: "this function is served by another node of the site",
    409: "the command conflicts with a hold, force or interlock that outranks it",
    413: "request body larger than the limit",
    422: "valid JSON, but a value is invalid (the field is named)",
    429: "too many requests from this source",
}


class ApiError(Exception):
    """A refusal: the HTTP status, the reason for people, the field at fault."""

    def __init__(self, status: int, error: str, field: str = "$",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field = status, error, field
        self.headers = headers or {}


def json_response(doc: Any, status: int = 200,
                  headers: dict[str, str] | None = None) -> web.Response:
    """A JSON response (no NaN: a value JSON cannot carry is a bug, not data)."""
    return web.Response(status=status, text=json.dumps(doc, allow_nan=False, default=str),
                        content_type="application/json", headers=headers)


def error_response(err: ApiError) -> web.Response:
    """The JSON body of a refusal."""
    return json_response({"error": err.error[:500], "field": err.field}, err.status,
                         headers=err.headers)
