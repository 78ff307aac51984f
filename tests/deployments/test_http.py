"""The ingress's HTTP edge without Ray: body caps, the deadline header, stage failures as HTTP
answers, and the OpenAPI document (every answered status listed, with its real body)."""
from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from starlette.requests import Request

from app.api.errors import ApiError
from deployments import http
from deployments.messages import DeadlineExceeded


def request_with(body: bytes, headers: dict[str, str] | None = None, chunk: int = 1024) -> Request:
    parts = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]

    async def receive():
        return {"type": "http.request", "body": parts.pop(0), "more_body": bool(parts)}

    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    return Request({"type": "http", "method": "POST", "path": "/", "headers": raw}, receive)


def test_bodies_are_read_up_to_their_cap():
    assert asyncio.run(http.read_body_capped(request_with(b"x" * 3000), limit=4096)) == b"x" * 3000
    with pytest.raises(ApiError) as declared:
        asyncio.run(http.read_body_capped(request_with(b"", {"content-length": "5000"}), limit=4096))
    assert declared.value.status == 413 and declared.value.field == "body"
    with pytest.raises(ApiError) as streamed:  # no length declared: refused as soon as it passes the cap
        asyncio.run(http.read_body_capped(request_with(b"x" * 9000), limit=4096))
    assert streamed.value.status == 413


def test_the_deadline_header_only_shortens_and_must_be_milliseconds():
    assert http.request_deadline({}, 5.0, now=100.0) == 105.0
    assert http.request_deadline({http.TIMEOUT_HEADER: "250"}, 5.0, now=100.0) == 100.25
    assert http.request_deadline({http.TIMEOUT_HEADER: "60000"}, 5.0, now=100.0) == 105.0
    for bad in ("soon", "0", "-5", "600001", ""):
        with pytest.raises(ApiError) as refused:
            http.request_deadline({http.TIMEOUT_HEADER: bad}, 5.0, now=100.0)
        assert refused.value.status == 422 and refused.value.field == http.TIMEOUT_HEADER


@pytest.mark.parametrize("exc, status, reason", [
    (DeadlineExceeded("ranking", 0.1), 504, "deadline"),
    (BackPressureError(num_queued_requests=9, max_queued_requests=8), 503, "overloaded"),
    (RayActorError(), 503, "unavailable"),
])
def test_stage_failures_are_answered_with_when_to_come_back(exc, status, reason):
    error, shed = http.stage_failure(exc)
    assert (error.status, shed) == (status, reason) and error.headers == {"Retry-After": "1"}


@pytest.fixture(scope="module")
def openapi() -> dict:
    from deployments.ingress import app

    return app.openapi()


def test_every_answered_status_is_documented_with_the_error_body(openapi):
    paths = openapi["paths"]
    expected = {
        ("/v1/feed", "get"): {"200", "400", "422", "429", "503", "504"},
        ("/v1/events", "post"): {"200", "400", "413", "422", "429", "503"},
        ("/admin/weights", "post"): {"200", "400", "401", "413", "422", "503"},
        ("/admin/reload", "post"): {"200", "400", "401", "404", "413", "422", "503"},
        ("/readyz", "get"): {"200", "503"},
    }
    for (path, method), statuses in expected.items():
        responses = paths[path][method]["responses"]
        assert statuses <= set(responses), (path, method, sorted(responses))
        for status in statuses - {"200"} - ({"503"} if path == "/readyz" else set()):
            schema = responses[status]["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (path, status, schema)
    assert "HTTPValidationError" not in openapi["components"]["schemas"]


def test_every_reference_resolves_and_bodies_and_security_are_declared(openapi):
    refs = set()

    def walk(node):
        if isinstance(node, dict):
            if "$ref" in node:
                refs.add(node["$ref"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(openapi)
    schemas = openapi["components"]["schemas"]
    assert refs and all(r.startswith("#/components/schemas/") and r.rsplit("/", 1)[1] in schemas for r in refs), refs
    events = openapi["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert events["minItems"] == 1 and events["type"] == "array"
    for path, required in (("/admin/weights", True), ("/admin/reload", False)):  # no reload body: LATEST
        operation = openapi["paths"][path]["post"]
        assert operation["security"] == [{"adminToken": []}] and operation["requestBody"]["required"] is required
    assert openapi["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


def test_the_document_states_the_configured_page_size_bounds():
    from app.api.config import ApiConfig
    from deployments.ingress import app

    def limit_schema():
        parameters = app.openapi()["paths"]["/v1/feed"]["get"]["parameters"]
        return next(p["schema"] for p in parameters if p["name"] == "limit")

    assert limit_schema() == {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}
    http.document_api(app, ApiConfig(min_limit=5, max_limit=40, default_limit=10))
    try:
        assert limit_schema() == {"type": "integer", "minimum": 5, "maximum": 40, "default": 10}
    finally:
        http.document_api(app, ApiConfig())
