"""The HTTP edge of the ingress: errors rendered as JSON naming the field, bodies read with a
cap, the request deadline from its header, and the OpenAPI description of all of that.

Every error the API answers has one shape, `ErrorBody`: `{"error": <kind>, "detail": [{"field",
"message"}]}` (app/api/errors.py). The `responses` tables below put each route's real statuses
into /openapi.json with that shape, so a client generated from the document is right about
every answer, not only the 200s.
"""
# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError

from app.api.config import ApiConfig
from app.api.errors import ApiError, error_body
from app.api.schemas import ID_PATTERN, MAX_ID
from app.api.validation import validation_problems
from deployments.messages import DeadlineExceeded, TakedownsUnknown

TIMEOUT_HEADER = "x-request-timeout-ms"  # a client may shorten (never lengthen) its feed deadline
MAX_ADMIN_BODY_BYTES = 64 * 1024


class Problem(BaseModel):
    field: str | None = Field(description="the query parameter, header, body field or path at fault")
    message: str


class ErrorBody(BaseModel):
    """Every 4xx/5xx the API answers itself."""

    error: str = Field(description="bad_request, unauthorized, not_found, conflict, too_large, validation, "
                                   "rate_limited, unavailable or deadline_exceeded")
    detail: list[Problem]


def _error(description: str, retry_after: bool = False, authenticate: bool = False) -> dict[str, Any]:
    headers: dict[str, Any] = {}
    if retry_after:
        headers["Retry-After"] = {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
    if authenticate:
        headers["WWW-Authenticate"] = {"description": "Bearer", "schema": {"type": "string"}}
    out: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        out["headers"] = headers
    return out


INVALID = {422: _error("a parameter, header or body field is invalid (each problem names it)")}
RATE_LIMITED = {429: _error("this client's rate limit is spent", retry_after=True)}
FEED_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the cursor is malformed, forged, expired or another user's"),
    **INVALID,
    **RATE_LIMITED,
    503: _error("overloaded, a stage is restarting, or pagination state is unavailable", retry_after=True),
    504: _error("the request's deadline passed before the page was ready", retry_after=True),
}
EVENTS_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the body is not JSON"),
    413: _error("the body is too large or carries too many events"),
    **INVALID,
    **RATE_LIMITED,
    503: _error("the event stream is unavailable; retry the batch (it is de-duplicated)", retry_after=True),
}
ADMIN_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _error("the body is not JSON"),
    401: _error("missing or wrong bearer token", authenticate=True),
    413: _error("the body is too large"),
    **INVALID,
    503: _error("Redis is unavailable: nothing was changed", retry_after=True),
}
NOT_FOUND = {404: _error("no such artifact version")}
PUBLISH_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ADMIN_RESPONSES,
    409: _error("an item of the trained catalogue: it changes with the next training, not by publishing"),
    413: _error("the body is too large or carries more than api.max_publish_items items"),
}
DELETE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ADMIN_RESPONSES, 404: _error("no served item has that id (deleted already, or never published)")}
READY_RESPONSES: dict[int | str, dict[str, Any]] = {503: {"description": "not ready: the body says which part"}}
ADMIN_SECURITY = [{"adminToken": []}]
PRODUCER_SECURITY = [{"producerToken": []}]


def install(app: FastAPI) -> None:
    """Error handlers, the security scheme of the admin endpoints, and a document that states
    the configured page-size bounds (`document_api`)."""
    app.state.api = ApiConfig()
    app.state.id_kind = "integer"
    app.state.topics = ()

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body(), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(error_body(422, validation_problems(list(exc.errors()))), 422)

    base_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = base_openapi()
            components = schema.setdefault("components", {})
            components.setdefault("securitySchemes", {})["adminToken"] = {
                "type": "http", "scheme": "bearer", "description": "RAYFEED_ADMIN_TOKEN (or api.admin_token_file)"}
            components["securitySchemes"]["producerToken"] = {
                "type": "http", "scheme": "bearer",
                "description": "RAYFEED_PRODUCER_TOKEN (or api.producer_token_file): publishing items only"}
            for path in schema.get("paths", {}).values():
                for operation in path.values():
                    if not isinstance(operation, dict):
                        continue
                    # FastAPI documents its own 422 body on every route; ours is ErrorBody.
                    if "422" in operation.get("responses", {}):
                        operation["responses"]["422"]["content"] = {
                            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
                    for parameter in operation.get("parameters", []):
                        if parameter["name"] == "limit" and parameter["in"] == "query":
                            api = app.state.api
                            parameter["schema"] = {"type": "integer", "minimum": api.min_limit,
                                                   "maximum": api.max_limit, "default": api.default_limit}
                        if parameter["name"] == "user_id" and parameter["in"] == "query":
                            parameter["schema"] = id_schema(app.state.id_kind, minimum=1)
                        if parameter["name"] in ("ref", "item_id") and parameter["in"] == "path":  # an item or creator id
                            parameter["schema"] = id_schema(app.state.id_kind, minimum=0)
                    # A body schema given by `json_body` carries its nested models: into components.
                    for media in operation.get("requestBody", {}).get("content", {}).values():
                        components.setdefault("schemas", {}).update(media.get("schema", {}).pop("$defs", {}))
            for name in ("HTTPValidationError", "ValidationError"):
                components.get("schemas", {}).pop(name, None)
            published = components.get("schemas", {}).get("PublishedItemIn", {}).get("properties", {})
            for name in ("item_id", "creator_id"):
                if name in published:
                    published[name] = id_schema(app.state.id_kind, 0)
            if "topics" in published and app.state.topics:  # the catalogue's list: others are refused
                published["topics"]["items"] = {"type": "string", "enum": list(app.state.topics)}
            batch = components.get("schemas", {}).get("PublishRequest", {}).get("properties", {})
            if "items" in batch:
                batch["items"]["maxItems"] = app.state.api.max_publish_items
            event = components.get("schemas", {}).get("Event", {}).get("properties", {})
            for name, minimum, nullable in (("user_id", 1, False), ("item_id", 0, True), ("creator_id", 0, True)):
                if name in event:  # this dataset's kind of id only (app/api/ids.py)
                    one = id_schema(app.state.id_kind, minimum)
                    event[name] = {"anyOf": [one, {"type": "null"}]} if nullable else one
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def document_api(app: FastAPI, api: ApiConfig, id_kind: str = "integer", topics: tuple[str, ...] = ()) -> None:
    """The document follows the configuration and dataset it is served with (page-size bounds,
    the kind of the dataset's ids, the catalogue's topics)."""
    if (app.state.api.min_limit, app.state.api.max_limit, app.state.api.default_limit, app.state.id_kind,
            app.state.api.max_publish_items, app.state.topics) != (
            api.min_limit, api.max_limit, api.default_limit, id_kind, api.max_publish_items, tuple(topics)):
        app.openapi_schema = None
    app.state.api, app.state.id_kind, app.state.topics = api, id_kind, tuple(topics)


def id_schema(kind: str, minimum: int) -> dict[str, Any]:
    """The JSON schema of one of the dataset's ids ("integer" or "string" ids)."""
    if kind == "integer":
        return {"type": "integer", "minimum": minimum, "maximum": MAX_ID}
    return {"type": "string", "minLength": 1, "maxLength": 128, "pattern": ID_PATTERN}


def json_body(model: type[BaseModel], description: str, required: bool = True) -> dict[str, Any]:
    """`openapi_extra` of a route that reads its body itself (capped, authorised first): the
    body's schema, with its nested models resolvable from the document's components."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"requestBody": {"required": required, "description": description,
                            "content": {"application/json": {"schema": schema}}}}


async def read_body_capped(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds `limit` bytes: a declared
    Content-Length over the limit is refused before reading anything, a streamed body as soon
    as the bytes read pass it (nothing larger is ever held in memory)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body", f"body larger than {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "body", f"body larger than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def request_deadline(headers, timeout_s: float, now: float) -> float:
    """Unix time by which the feed must be answered: `timeout_s` from now, or sooner when the
    client's X-Request-Timeout-Ms header asks for it (422 naming the header when malformed)."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is not None:
        if not raw.strip().isdigit() or not 1 <= int(raw) <= 600_000:
            raise ApiError(422, TIMEOUT_HEADER, "must be an integer number of milliseconds in 1..600000")
        timeout_s = min(timeout_s, int(raw) / 1000.0)
    return now + timeout_s


STAGE_FAILURES = (BackPressureError, RayActorError, ReplicaUnavailableError, DeploymentUnavailableError,
                  DeadlineExceeded, TakedownsUnknown)


def stage_failure(exc: Exception) -> tuple[ApiError, str]:
    """A stage call's failure as the client sees it, and the shed reason it is counted under:
    overloaded or restarting (503) or late (504). Each says when to come back."""
    if isinstance(exc, DeadlineExceeded):
        return ApiError(504, None, f"deadline exceeded ({exc}); retry later", {"Retry-After": "1"}), "deadline"
    if isinstance(exc, BackPressureError):
        return ApiError(503, None, f"overloaded: {exc}", {"Retry-After": "1"}), "overloaded"
    if isinstance(exc, TakedownsUnknown):
        return ApiError(503, None, str(exc), {"Retry-After": "1"}), "unavailable"
    return ApiError(503, None, f"a stage is restarting ({type(exc).__name__})", {"Retry-After": "1"}), "unavailable"
