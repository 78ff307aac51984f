"""Pydantic validation errors as the API reports them: one problem per error, each naming the
field at fault as a client would write it (`limit`, `[3].type`, `ranking.click`)."""
from __future__ import annotations

from typing import Any

_LOCATIONS = ("query", "body", "header", "path")
# Pydantic names the member of a union that failed (an id is an integer or a string): not a field.
_UNION_TAGS = ("constrained-int", "constrained-str", "int", "str", "float", "none")


def field_name(loc: tuple | list) -> str:
    """("query", "limit") -> "limit"; ("body", 0, "type") -> "[0].type"; () -> "body"."""
    parts = [p for p in loc if p not in _LOCATIONS and p not in _UNION_TAGS]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_problems(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One problem per field (a union reports each member's complaint: the first is kept)."""
    problems: dict[str, dict[str, Any]] = {}
    for e in errors:
        field = field_name(e.get("loc", ()))
        problems.setdefault(field, {"field": field, "message": e.get("msg", "invalid")})
    return list(problems.values())
