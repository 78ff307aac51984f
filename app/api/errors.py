"""The API's error: a status, the field at fault and a message a client can act on.

Raised by the pure request parsing in app/api and by the ingress; deployments/http.py renders
it as `{"error": <kind>, "detail": [{"field", "message"}, ...]}` with any headers it carries
(Retry-After on 429/503/504, WWW-Authenticate on 401).
"""
from __future__ import annotations

from typing import Any

ERROR_KINDS: dict[int, str] = {
    400: "bad_request", 401: "unauthorized", 404: "not_found", 409: "conflict", 413: "too_large",
    422: "validation", 429: "rate_limited", 503: "unavailable", 504: "deadline_exceeded",
}


class ApiError(Exception):
    """An error answered as JSON naming the field(s) at fault (`problems`: one per field)."""

    def __init__(self, status: int, field: str | None, message: str, headers: dict[str, str] | None = None,
                 problems: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers
        self.problems = problems if problems is not None else [{"field": field, "message": message}]

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.problems)


def error_body(status: int, problems: list[dict[str, Any]]) -> dict[str, Any]:
    return {"error": ERROR_KINDS.get(status, "error"), "detail": problems}
