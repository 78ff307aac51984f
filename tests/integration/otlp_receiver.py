"""A minimal OTLP/HTTP trace receiver for tests: what a collector sees, nothing more.

It accepts `POST /v1/traces` with a protobuf `ExportTraceServiceRequest` (optionally gzipped),
answers an empty `ExportTraceServiceResponse`, and keeps every span as a `ReceivedSpan`. Tests
wait for the spans of one trace with `wait_for(trace_id, predicate)`.
"""
from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex digits
    span_id: str  # 16 hex digits
    parent_span_id: str  # "" for a root span
    name: str
    service: str
    attributes: dict[str, object]
    start_ns: int
    end_ns: int


def _value(any_value) -> object:
    kind = any_value.WhichOneof("value")
    return getattr(any_value, kind) if kind else None


def decode(body: bytes) -> list[ReceivedSpan]:
    request = ExportTraceServiceRequest.FromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(ReceivedSpan(
                    span.trace_id.hex(), span.span_id.hex(), span.parent_span_id.hex(), span.name,
                    str(resource.get("service.name", "")), {a.key: _value(a.value) for a in span.attributes},
                    span.start_time_unix_nano, span.end_time_unix_nano,
                ))
    return spans


class OtlpReceiver:
    """`with OtlpReceiver() as receiver:` listens on 127.0.0.1:<free port>; `endpoint` is the
    base URL to put in OTEL_EXPORTER_OTLP_ENDPOINT (the exporter appends /v1/traces)."""

    def __init__(self, max_spans: int = 200_000) -> None:
        self.spans: list[ReceivedSpan] = []
        self.posts = 0
        self._max_spans = max_spans
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver._add(decode(body))
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:  # keep pytest output clean
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="otlp-receiver", daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _add(self, spans: list[ReceivedSpan]) -> None:
        with self._changed:
            self.posts += 1
            self.spans.extend(spans)
            del self.spans[: max(0, len(self.spans) - self._max_spans)]
            self._changed.notify_all()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._changed:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait_for(self, trace_id: str, done: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 30.0) -> list[ReceivedSpan]:
        """The trace's spans once `done(spans)` holds (exporters flush in the background), or
        whatever arrived when `timeout_s` ran out."""
        with self._changed:
            self._changed.wait_for(lambda: done([s for s in self.spans if s.trace_id == trace_id]), timeout_s)
            return [s for s in self.spans if s.trace_id == trace_id]

    def __enter__(self) -> "OtlpReceiver":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
