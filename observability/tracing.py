"""OpenTelemetry tracing: one trace per feed request, one child span per stage.

How the serving layer uses it (each Serve replica is its own process):

    # every deployment's __init__ (idempotent per process):
    setup_tracing(config.observability)

    # ingress, per request: continue the client's trace (W3C traceparent header) or start one
    with request_span("GET /v1/feed", request.headers, user_id=uid, request_id=rid, salt=cfg.user_id_hash_salt):
        carrier = inject_context()               # put into the payload sent to the next deployment
        await ranking_handle.remote(payload | {"trace": carrier})

    # a downstream deployment, per call: its spans join the caller's trace
    with continue_trace("ranking", payload["trace"]):
        runner.run(query)                        # PipelineRunner(hook=TracingStageHook(...)) makes stage spans

    # inside an @serve.batch handler the ambient context is the *first* request's, so give
    # each request's carrier explicitly:
    with batch_span("ranking.model", [p["trace"] for p in batch]) as spans:
        ...

We do not use Ray Core's tracing hook: context travels in the request payload as a plain
``dict[str, str]`` (W3C trace context), which survives any serialisation and works for handles,
HTTP and queues alike.

Export: spans go over OTLP/HTTP only when OTEL_EXPORTER_OTLP_ENDPOINT (or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set. Without it the provider has no exporter: spans are still
created (so ids propagate to downstream services) but nothing is sent and no background thread runs.
"""
from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import logging
import os
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace import sampling
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.pipeline.runner import PartSpan, StageRecord
from observability.config import ObservabilityConfig

log = logging.getLogger(__name__)

TRACER_NAME = "rayfeed"
_PROPAGATOR = TraceContextTextMapPropagator()

# Span attribute keys, declared once.
ATTR_USER = "rayfeed.user_id_hash"
ATTR_REQUEST = "rayfeed.request_id"
ATTR_PIPELINE = "rayfeed.pipeline"
ATTR_STAGE = "rayfeed.stage.name"
ATTR_KIND = "rayfeed.stage.kind"
ATTR_N_IN = "rayfeed.candidates.in"
ATTR_N_OUT = "rayfeed.candidates.out"
ATTR_MODEL_VERSION = "rayfeed.model.version"
ATTR_BATCH_SIZE = "rayfeed.batch.size"
ATTR_BATCH_INDEX = "rayfeed.batch.index"

_setup_lock = threading.Lock()
_provider: TracerProvider | None = None


_ENV_SAMPLERS = {
    "always_on": lambda ratio: sampling.ALWAYS_ON,
    "always_off": lambda ratio: sampling.ALWAYS_OFF,
    "traceidratio": lambda ratio: sampling.TraceIdRatioBased(ratio),
    "parentbased_always_on": lambda ratio: sampling.DEFAULT_ON,
    "parentbased_always_off": lambda ratio: sampling.DEFAULT_OFF,
    "parentbased_traceidratio": lambda ratio: sampling.ParentBasedTraceIdRatio(ratio),
}


def _sampler(config: ObservabilityConfig, env: Mapping[str, str]) -> Sampler:
    """OTEL_TRACES_SAMPLER[_ARG] per the OTel spec when set; else parent-based with the configured ratio.

    (The SDK parses these only from os.environ; reading them from `env` keeps tests hermetic.)
    """
    name = env.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    if name:
        if name in _ENV_SAMPLERS:
            try:
                ratio = float(env.get("OTEL_TRACES_SAMPLER_ARG", "1.0"))
            except ValueError:
                log.warning("OTEL_TRACES_SAMPLER_ARG is not a number; using 1.0")
                ratio = 1.0
            return _ENV_SAMPLERS[name](ratio)
        log.warning("unsupported OTEL_TRACES_SAMPLER %r; using the configured ratio", name)
    return sampling.ParentBasedTraceIdRatio(config.sampling_ratio)


def build_tracer_provider(
    config: ObservabilityConfig | None = None,
    env: Mapping[str, str] | None = None,
    processors: Sequence[SpanProcessor] = (),
) -> TracerProvider:
    """A TracerProvider from the standard OTel environment and `config`, not installed globally.

    `processors` are added as given (tests pass a SimpleSpanProcessor over an InMemorySpanExporter);
    an OTLP/HTTP exporter (batching) is added only when OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    OTEL_EXPORTER_OTLP_ENDPOINT (+ "/v1/traces", per the spec) is set in `env` (default os.environ)
    and OTEL_TRACES_EXPORTER is not "none". With neither, nothing is sampled (no span is recorded).
    """
    config = config or ObservabilityConfig()
    env = os.environ if env is None else env
    resource = Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or config.service_name})
    consumers = list(processors)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or (
        env["OTEL_EXPORTER_OTLP_ENDPOINT"].rstrip("/") + "/v1/traces" if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") else None
    )
    exporters = {e.strip() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if env.get("OTEL_SDK_DISABLED", "").lower() != "true" and endpoint and "none" not in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # Headers, timeout, compression and certificates come from the standard OTEL_* variables.
        consumers.append(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
        log.info("tracing: exporting spans over OTLP/HTTP to %s", endpoint)
    # With nothing to receive them, recorded spans are CPU for nothing (every stage of every
    # request): record none. Trace context still propagates (ids are made, unsampled).
    provider = TracerProvider(sampler=_sampler(config, env) if consumers else sampling.ALWAYS_OFF, resource=resource)
    for processor in consumers:
        provider.add_span_processor(processor)
    return provider


def setup_tracing(config: ObservabilityConfig | None = None) -> TracerProvider:
    """Install this process's global TracerProvider once (later calls return the same one).

    Call it in every deployment's constructor. OTel forbids replacing a global provider, so
    configuration changes need a new process (a replica restart), like the exporter endpoint.
    """
    global _provider
    with _setup_lock:
        if _provider is None:
            _provider = build_tracer_provider(config)
            trace.set_tracer_provider(_provider)
        return _provider


_tracers: weakref.WeakKeyDictionary[trace.TracerProvider, trace.Tracer] = weakref.WeakKeyDictionary()


def get_tracer(provider: trace.TracerProvider | None = None) -> trace.Tracer:
    """rayfeed's tracer of `provider` (default: the global one), made once per provider: the SDK
    builds a new Tracer on every `get_tracer` (~11 µs), and every stage of every request asks."""
    provider = provider or trace.get_tracer_provider()
    tracer = _tracers.get(provider)
    if tracer is None:
        tracer = _tracers[provider] = provider.get_tracer(TRACER_NAME)
    return tracer


def hash_user_id(user_id: int | str, salt: str) -> str:
    """A stable keyed hash of a user id for span attributes; raw ids never go on spans."""
    return hmac.new(salt.encode(), str(user_id).encode(), hashlib.sha256).hexdigest()[:16]


# -- W3C context propagation -------------------------------------------------------------------

def inject_context(ctx: otel_context.Context | None = None) -> dict[str, str]:
    """The current (or given) trace context as W3C headers: {"traceparent": ..., ["tracestate": ...]}.

    Empty when there is no valid span context. Put it in the payload of a deployment call.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=ctx)
    return carrier


def extract_context(carrier: Mapping[str, str] | None) -> otel_context.Context:
    """A Context whose parent is the span described by `carrier` (case-insensitive keys, so HTTP
    headers work as they are). An empty or malformed carrier gives a root context."""
    if not carrier:
        return otel_context.Context()
    lowered = {str(k).lower(): v for k, v in carrier.items()}
    return _PROPAGATOR.extract(lowered, context=otel_context.Context())


@contextlib.contextmanager
def continue_trace(
    name: str,
    carrier: Mapping[str, str] | None,
    *,
    kind: SpanKind = SpanKind.SERVER,
    attributes: Mapping[str, object] | None = None,
    tracer: trace.Tracer | None = None,
) -> Iterator[Span]:
    """Start a span parented on `carrier` and make it current for the block.

    Without a carrier the span starts a new trace. Exceptions are recorded and re-raised.
    """
    tracer = tracer or get_tracer()
    with tracer.start_as_current_span(
        name, context=extract_context(carrier), kind=kind, attributes=dict(attributes or {})
    ) as span:
        yield span


@contextlib.contextmanager
def request_span(
    name: str,
    headers: Mapping[str, str] | None,
    *,
    user_id: int | str | None,
    request_id: str,
    salt: str,
    attributes: Mapping[str, object] | None = None,
    tracer: trace.Tracer | None = None,
) -> Iterator[Span]:
    """The ingress span of one request: honours a client's `traceparent`, hashes the user id."""
    attrs: dict[str, object] = {ATTR_REQUEST: request_id, **(attributes or {})}
    if user_id is not None:
        attrs[ATTR_USER] = hash_user_id(user_id, salt)
    with continue_trace(name, headers, kind=SpanKind.SERVER, attributes=attrs, tracer=tracer) as span:
        yield span


def record_span(
    name: str,
    carrier: Mapping[str, str] | None,
    start_ns: int,
    end_ns: int,
    *,
    attributes: Mapping[str, object] | None = None,
    tracer: trace.Tracer | None = None,
) -> None:
    """A finished span for an interval measured before the span could exist, e.g. the time a
    request waited in an @serve.batch queue (known only when the batch starts)."""
    tracer = tracer or get_tracer()
    span = tracer.start_span(name, context=extract_context(carrier), attributes=dict(attributes or {}),
                             start_time=start_ns)
    span.end(end_time=max(end_ns, start_ns))


# -- batched handlers --------------------------------------------------------------------------

class BatchSpans:
    """The spans of one batched call; attribute and error helpers apply to all of them."""

    def __init__(self, spans: list[Span], per_request: bool) -> None:
        self.spans, self.per_request = spans, per_request

    def set_attribute(self, key: str, value: object) -> None:
        for span in self.spans:
            span.set_attribute(key, value)

    def span_for(self, index: int) -> Span:
        """The span of request `index` (the single linked span in "linked" mode)."""
        return self.spans[index] if self.per_request else self.spans[0]


@contextlib.contextmanager
def batch_span(
    name: str,
    parents: Sequence[Mapping[str, str] | None],
    *,
    mode: Literal["per_request", "linked"] = "per_request",
    attributes: Mapping[str, object] | None = None,
    tracer: trace.Tracer | None = None,
) -> Iterator[BatchSpans]:
    """Spans for one @serve.batch call serving len(parents) requests.

    Inside a batch handler the ambient context belongs to whichever request started the batch,
    so spans made the usual way would all land in that request's trace. This helper never uses
    the ambient context:

    - "per_request" (default): one span per request, each a child of that request's carrier,
      all with the same start and end and `rayfeed.batch.size`/`.index`. Every request's trace
      then shows the model call under its own stage, with its true latency. Costs one span per
      request (bounded by the batch size). Chosen because a trace should be complete on its own.
    - "linked": one root span with a Link to every request's context: cheaper for huge batches,
      but each request's trace only shows the link, not the span.

    No span is made current (there is no single right parent for the handler's inner code).
    Exceptions are recorded on every span and re-raised.
    """
    tracer = tracer or get_tracer()
    base = {**(attributes or {}), ATTR_BATCH_SIZE: len(parents)}
    start = time.time_ns()
    if mode == "per_request":
        spans = [
            tracer.start_span(
                name, context=extract_context(carrier), attributes={**base, ATTR_BATCH_INDEX: i}, start_time=start
            )
            for i, carrier in enumerate(parents)
        ]
    elif mode == "linked":
        links = [
            Link(trace.get_current_span(extract_context(c)).get_span_context())
            for c in parents
        ]
        links = [link for link in links if link.context.is_valid]
        spans = [tracer.start_span(name, context=otel_context.Context(), links=links, attributes=base, start_time=start)]
    else:
        raise ValueError(f"unknown batch span mode {mode!r}")
    try:
        yield BatchSpans(spans, per_request=mode == "per_request")
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        end = time.time_ns()
        for span in spans:
            span.end(end_time=end)


# -- the pipeline hook ---------------------------------------------------------------------------

class TracingStageHook:
    """StageHook making each stage a child span of the current context (the request's span).

    Attributes: pipeline, stage name and kind, candidates in/out, plus `attributes` given here
    (e.g. the model version; `set_attributes` updates them on reconfigure). A stage that raises
    gets ERROR status and the exception; a stage that failed open (the runner reports the error
    only through `record`) gets ERROR status and an `exception` event too. To carry that, a span
    ends when its `record` arrives (end time taken when the stage returned), or at once if the
    stage raised. Inside an unsampled request (a valid parent without the sampled flag; a remote
    parent from a carrier is non-recording but sampled, and does get stage spans) no stage span
    is made at all: the sampler would only have dropped it, after its cost.
    """

    def __init__(
        self,
        pipeline: str,
        attributes: Mapping[str, object] | None = None,
        tracer: trace.Tracer | None = None,
        batch_span_mode: Literal["per_request", "linked"] = "per_request",
    ) -> None:
        self.pipeline = pipeline
        self._tracer = tracer
        self._attributes = dict(attributes or {})
        self.batch_span_mode = batch_span_mode
        self._pending: contextvars.ContextVar[tuple[str, Span, int] | None] = contextvars.ContextVar(
            f"rayfeed_pending_span_{id(self)}", default=None
        )

    @property
    def tracer(self) -> trace.Tracer:
        return self._tracer or get_tracer()

    def set_attributes(self, **attributes: object) -> None:
        self._attributes.update(attributes)

    def _flush_pending(self) -> None:
        pending = self._pending.get()
        if pending is not None:
            pending[1].end(end_time=pending[2])
            self._pending.set(None)

    @contextlib.contextmanager
    def span(self, name: str, kind: str) -> Iterator[dict[str, object]]:
        self._flush_pending()
        parent = trace.get_current_span().get_span_context()
        if parent.is_valid and not parent.trace_flags.sampled:
            yield {}  # an unsampled request: its stage spans would be dropped unrecorded anyway
            return
        attrs = {ATTR_PIPELINE: self.pipeline, ATTR_STAGE: name, ATTR_KIND: kind, **self._attributes}
        span = self.tracer.start_span(f"{self.pipeline}.{name}", attributes=attrs)
        figures: dict[str, object] = {}
        try:
            with trace.use_span(span, end_on_exit=False, record_exception=False, set_status_on_exception=False):
                yield figures
        except BaseException as exc:
            self._set_figures(span, figures)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.end()
            raise
        self._set_figures(span, figures)
        self._pending.set((name, span, time.time_ns()))

    @staticmethod
    def _set_figures(span: Span, figures: Mapping[str, object]) -> None:
        for key, attr in (("n_in", ATTR_N_IN), ("n_out", ATTR_N_OUT)):
            if key in figures:
                span.set_attribute(attr, int(figures[key]))  # type: ignore[arg-type]
        for key, value in figures.items():
            if key not in ("n_in", "n_out") and isinstance(value, (str, bool, int, float)):
                span.set_attribute(f"rayfeed.{key}", value)

    def record(self, record: StageRecord) -> None:
        pending = self._pending.get()
        if pending is None or pending[0] != record.name:
            return
        _, span, end = pending
        self._pending.set(None)
        span.set_attribute(ATTR_N_IN, record.n_in)
        span.set_attribute(ATTR_N_OUT, record.n_out)
        if record.error:
            span.add_event("exception", {"exception.message": record.error, "rayfeed.failed_open": True})
            span.set_status(Status(StatusCode.ERROR, record.error))
        span.end(end_time=end)

    @contextlib.contextmanager
    def part(self, name: str, trace_carrier: Mapping[str, str] | None) -> Iterator[PartSpan]:
        """A pipeline part's span (e.g. "ranking"), continuing the caller's trace from its carrier
        (a deployment hop) or, without one, a child of the current context (in-process)."""
        self._flush_pending()
        context = extract_context(trace_carrier) if trace_carrier else None
        kind = SpanKind.SERVER if trace_carrier else SpanKind.INTERNAL
        with self.tracer.start_as_current_span(name, context=context, kind=kind,
                                               attributes=dict(self._attributes)) as span:
            opened = PartSpan(inject_context())
            try:
                yield opened
            finally:
                self._flush_pending()
                self._set_figures(span, opened.figures)

    @contextlib.contextmanager
    def within(self, trace_carrier: Mapping[str, str]) -> Iterator[None]:
        self._flush_pending()
        token = otel_context.attach(extract_context(trace_carrier))
        try:
            yield None
        finally:
            self._flush_pending()
            otel_context.detach(token)

    @contextlib.contextmanager
    def batch_span(
        self, name: str, kind: str, traces: Sequence[Mapping[str, str]], sizes: Sequence[int],
    ) -> Iterator[None]:
        self._flush_pending()
        attributes = {ATTR_PIPELINE: self.pipeline, ATTR_STAGE: name, ATTR_KIND: kind, **self._attributes}
        with batch_span(f"{self.pipeline}.{name}", traces, mode=self.batch_span_mode, attributes=attributes,
                        tracer=self.tracer) as spans:
            spans.set_attribute("rayfeed.batch.candidates", int(sum(sizes)))
            for i, n in enumerate(sizes):
                spans.span_for(i).set_attribute(ATTR_N_IN, int(n))
                spans.span_for(i).set_attribute(ATTR_N_OUT, int(n))
            yield None

    def wait(self, name: str, trace_carrier: Mapping[str, str], start_ns: int, end_ns: int, batch_size: int) -> None:
        record_span(f"{self.pipeline}.{name}", trace_carrier, start_ns, end_ns,
                    attributes={ATTR_BATCH_SIZE: batch_size}, tracer=self.tracer)


# Re-exported for callers that only need the hook signature.
__all__ = [
    "ATTR_BATCH_SIZE", "ATTR_MODEL_VERSION", "ATTR_USER", "BatchSpans", "TracingStageHook", "batch_span",
    "build_tracer_provider", "continue_trace", "extract_context", "get_tracer", "hash_user_id",
    "inject_context", "record_span", "request_span", "setup_tracing",
]
