"""The admin API's work, behind the ingress's routes: authorisation before anything else, the
admin overrides (reload, weights) and takedowns (items and creators, with an undo).

Every write goes to Redis first and is acknowledged only once Redis has it; with Redis
unreachable the answer is 503 (a takedown is never acknowledged and lost). A write Redis had
buffered before it stopped answering may still land: both takedown and restore are idempotent,
so the caller retries until acknowledged.
Replicas pick the writes up by polling (overrides: `admin_poll_s`; takedowns:
`api.takedown_poll_s`), so each answer says how soon every replica applies it.
"""
from __future__ import annotations

import json
import time
from typing import Any

import numpy as np
from fastapi import Request
from pydantic import BaseModel, ValidationError

from app.api.errors import ApiError
from app.api.events import integral_number
from app.api.ids import ApiIds
from app.api.responses import bearer_token_matches
from app.api.validation import validation_problems
from app.artifacts import ArtifactNotFound, artifact_store
from app.catalog import Catalog
from app.state.errors import StoreUnavailable
from app.state.takedowns import Kind, TakedownStore
from config import ConfigError, config_from_mapping, deep_merge
from deployments import http
from deployments.redis_guard import GuardedRedis


async def authorised_body(request: Request, token: str | None, model: type[BaseModel],
                          max_bytes: int = http.MAX_ADMIN_BODY_BYTES) -> BaseModel:
    """Authorise FIRST (a caller without the token learns nothing, not even a 422), then parse."""
    if not bearer_token_matches(request.headers.get("authorization"), token):
        raise ApiError(401, "Authorization", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
    raw = await http.read_body_capped(request, max_bytes)
    try:
        try:  # an integral JSON number (3.0) is an integer, as JSON Schema says (app/api/events.py)
            payload = json.loads(raw or b"{}", parse_float=integral_number)
        except (json.JSONDecodeError, UnicodeDecodeError):
            return model.model_validate_json(raw)  # refused, with pydantic's own account of the JSON error
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = validation_problems(list(exc.errors()))
        raise ApiError(422, problems[0]["field"], problems[0]["message"], problems=problems) from None


async def write_overrides(redis: GuardedRedis, deployed: dict[str, Any], change: dict[str, Any],
                          poll_s: float) -> dict[str, Any]:
    """Merge `change` into the admin overrides; every replica applies them within `poll_s`. The
    merged configuration is validated first (422 naming the key)."""
    overrides = redis.overrides()
    if overrides is None:
        raise ApiError(503, None, "admin overrides need Redis (REDIS_URL)", {"Retry-After": "1"})

    def validate(merged: dict[str, Any]) -> None:
        try:
            config_from_mapping(deep_merge(deployed, merged), "admin override")
        except ConfigError as exc:
            raise ApiError(422, None, str(exc)) from None

    try:
        written = await overrides.merge(change, validate)
    except StoreUnavailable as exc:
        raise ApiError(503, None, f"Redis unavailable: {exc}", {"Retry-After": "1"}) from None
    return {"generation": written.generation, "overrides": written.overrides, "applies_within_s": poll_s}


def check_version(artifacts, version: str | None) -> None:
    """404 naming `version` unless it is a published artifact version (None: follow LATEST)."""
    if version is None:
        return
    try:
        artifact_store(artifacts).check(version)
    except (ArtifactNotFound, ValueError) as exc:
        raise ApiError(404, "version", str(exc)) from None


def _index(ids: ApiIds, kind: Kind, raw: str) -> tuple[object, int]:
    """The path's id in the dataset's own ids, and its index (404 when the dataset has no such one)."""
    field = f"{kind}_id"
    try:
        external = ids.parse_query(raw, field)
        return external, (ids.item(external, field) if kind == "item" else ids.creator(external, field))
    except ApiError as exc:
        raise ApiError(404 if "unknown" in exc.message else exc.status, field, exc.message) from None


def item_index(ids: ApiIds, raw_id: str, catalog: Catalog) -> tuple[object, int]:
    """A path's item id and its index, 404 unless the catalogue (published items included) holds it."""
    external, index = _index(ids, "item", raw_id)
    if not catalog.is_known(np.array([index]))[0]:
        raise ApiError(404, "item_id", f"unknown item {external!r}")
    return external, index


def _store(redis: GuardedRedis) -> TakedownStore:
    if redis.client is None:
        raise ApiError(503, None, "takedowns need Redis (REDIS_URL)", {"Retry-After": "1"})
    return TakedownStore(redis.client)


async def take_down(redis: GuardedRedis, catalog: Catalog, ids: ApiIds, kind: Kind, raw_id: str, reason: str,
                    poll_s: float) -> dict[str, Any]:
    """Take an item or a creator of the catalogue down (404 for one it does not hold)."""
    external, index = item_index(ids, raw_id, catalog) if kind == "item" else _index(ids, kind, raw_id)
    if kind == "creator" and not (catalog.creator_id == index).any():
        raise ApiError(404, "creator_id", f"unknown creator {external!r}")
    return await record_takedown(redis, kind, index, external, reason, poll_s)


async def record_takedown(redis: GuardedRedis, kind: Kind, index: int, external: object, reason: str,
                          poll_s: float) -> dict[str, Any]:
    """The takedown of a resolved id, acknowledged once Redis has it (503 otherwise)."""
    try:
        version = await redis.guarded("takedown", lambda: _store(redis).take_down(
            kind, index, reason, time.time(), external))
    except StoreUnavailable as exc:
        raise ApiError(503, None, f"takedown not acknowledged (Redis did not answer: {exc}); retry, it is idempotent",
                       {"Retry-After": "1"}) from None
    return {"kind": kind, "id": external, "taken_down": True, "reason": reason, "version": version,
            "applies_within_s": poll_s}


async def restore(redis: GuardedRedis, ids: ApiIds, kind: Kind, raw_id: str, poll_s: float) -> dict[str, Any]:
    external, index = _index(ids, kind, raw_id)
    try:
        removed, version = await redis.guarded("restore", lambda: _store(redis).restore(kind, index))
    except StoreUnavailable as exc:
        raise ApiError(503, None, f"restore not acknowledged (Redis did not answer: {exc}); retry, it is idempotent",
                       {"Retry-After": "1"}) from None
    return {"kind": kind, "id": external, "taken_down": False, "was_taken_down": removed, "version": version,
            "applies_within_s": poll_s}
