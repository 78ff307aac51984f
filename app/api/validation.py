"""Pydantic validation errors as the API reports them: one problem per error, each naming the
field at fault as a client would write it (`limit`, `[3].type`, `ranking.click`)."""
from __future__ import annotations

from typing import Any

_LOCATIONS = ("query", "body", "header", "path")


def field_name(loc: tuple | list) -> str:
    """("query", "limit") -> "limit"; ("body", 0, "type") -> "[0].type"; () -> "body"."""
    parts = [p for p in loc if p not in _LOCATIONS]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_problems(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"field": field_name(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in errors]
