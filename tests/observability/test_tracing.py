"""Tracing with the SDK's in-memory exporter: parentage, W3C round trips, batches, export set-up."""
from __future__ import annotations

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app.pipeline.candidates import Candidates
from app.pipeline.runner import PipelineRunner, StageRecord
from observability.config import ObservabilityConfig
from observability.tracing import (
    ATTR_BATCH_SIZE,
    ATTR_MODEL_VERSION,
    ATTR_N_IN,
    ATTR_N_OUT,
    ATTR_USER,
    TracingStageHook,
    batch_span,
    build_tracer_provider,
    continue_trace,
    extract_context,
    get_tracer,
    hash_user_id,
    inject_context,
    request_span,
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"


@pytest.fixture
def exporter():
    return InMemorySpanExporter()


@pytest.fixture
def tracer(exporter):
    provider = build_tracer_provider(ObservabilityConfig(), env={}, processors=[SimpleSpanProcessor(exporter)])
    yield provider.get_tracer("test")
    provider.shutdown()


class Source:
    name = "trending"

    def fetch(self, query):
        return Candidates.from_source("trending", np.arange(10), np.ones(10))


class EvenFilter:
    name = "even"

    def keep(self, query, candidates):
        return candidates.item_ids % 2 == 0, "odd"


class BrokenFilter:
    name = "broken"

    def keep(self, query, candidates):
        raise RuntimeError("store down")


class BrokenScorer:
    name = "scorer"

    def score(self, query, candidates):
        raise RuntimeError("model missing")


def by_name(exporter):
    return {s.name: s for s in exporter.get_finished_spans()}


def test_stage_spans_are_children_of_the_request_span(exporter, tracer):
    from app.pipeline.candidates import FeedQuery

    hook = TracingStageHook("organic", {ATTR_MODEL_VERSION: "v7"}, tracer=tracer)
    runner = PipelineRunner("organic", [Source()], [EvenFilter(), BrokenFilter()], hook=hook)
    with request_span("GET /v1/feed", {"traceparent": TRACEPARENT}, user_id=42, request_id="r1", salt="s", tracer=tracer):
        runner.run(FeedQuery(user_id=42))
    spans = by_name(exporter)
    root = spans["GET /v1/feed"]
    assert root.kind is SpanKind.SERVER
    assert format(root.context.trace_id, "032x") == CLIENT_TRACE  # the client's trace continues
    assert format(root.parent.span_id, "016x") == CLIENT_PARENT
    assert root.attributes[ATTR_USER] == hash_user_id(42, "s") != "42"
    for stage in ("organic.trending", "organic.even", "organic.broken"):
        assert spans[stage].parent.span_id == root.context.span_id
        assert spans[stage].context.trace_id == root.context.trace_id
        assert spans[stage].attributes[ATTR_MODEL_VERSION] == "v7"
    assert spans["organic.trending"].attributes["rayfeed.stage.kind"] == "source"
    assert spans["organic.trending"].attributes[ATTR_N_OUT] == 10
    assert (spans["organic.even"].attributes[ATTR_N_IN], spans["organic.even"].attributes[ATTR_N_OUT]) == (10, 5)
    # failed open: the runner only reports the error through record(); the span still carries it
    broken = spans["organic.broken"]
    assert broken.status.status_code is StatusCode.ERROR
    assert "store down" in broken.status.description
    assert spans["organic.even"].status.status_code is StatusCode.UNSET
    assert all(s.end_time >= s.start_time for s in spans.values())


def test_fail_closed_stage_records_exception(exporter, tracer):
    from app.pipeline.candidates import FeedQuery

    runner = PipelineRunner("organic", [Source()], [BrokenScorer()], hook=TracingStageHook("organic", tracer=tracer))
    with pytest.raises(RuntimeError):
        runner.run(FeedQuery(user_id=1))
    span = by_name(exporter)["organic.scorer"]
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_traceparent_round_trip_across_a_deployment_call(exporter, tracer):
    with tracer.start_as_current_span("ingress") as ingress:
        carrier = inject_context()
    version, trace_id, span_id, flags = carrier["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00", f"{ingress.get_span_context().trace_id:032x}", f"{ingress.get_span_context().span_id:016x}"
    )
    assert int(flags, 16) & 1  # sampled
    # the "downstream deployment": nothing current here, only the payload's carrier
    with continue_trace("ranking", carrier, tracer=tracer):
        with tracer.start_as_current_span("inner"):
            pass
    spans = by_name(exporter)
    assert spans["ranking"].parent.span_id == spans["ingress"].context.span_id
    assert spans["inner"].parent.span_id == spans["ranking"].context.span_id
    assert len({s.context.trace_id for s in spans.values()}) == 1


def test_extract_handles_headers_case_and_garbage(tracer):
    assert inject_context(extract_context({"Traceparent": TRACEPARENT}))["traceparent"] == TRACEPARENT
    assert inject_context(extract_context({"traceparent": "nonsense"})) == {}
    assert inject_context(extract_context(None)) == {}


def test_request_without_traceparent_starts_a_trace(exporter, tracer):
    with request_span("GET /v1/feed", {}, user_id=None, request_id="r", salt="s", tracer=tracer):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and ATTR_USER not in span.attributes


def _request_carriers(tracer, n):
    carriers, ids = [], []
    for i in range(n):
        with tracer.start_as_current_span(f"request-{i}") as span:
            carriers.append(inject_context())
            ids.append((span.get_span_context().trace_id, span.get_span_context().span_id))
    return carriers, ids


def test_batch_span_parents_each_request(exporter, tracer):
    carriers, ids = _request_carriers(tracer, 3)
    # The ambient context inside a batch handler is the first request's: must not matter.
    with continue_trace("request-0-handler", carriers[0], tracer=tracer):
        with batch_span("ranking.model", carriers, tracer=tracer) as batch:
            batch.set_attribute("rayfeed.model.version", "v1")
    spans = [s for s in exporter.get_finished_spans() if s.name == "ranking.model"]
    assert len(spans) == 3
    for span in spans:
        index = span.attributes["rayfeed.batch.index"]
        assert (span.context.trace_id, span.parent.span_id) == ids[index]
        assert span.attributes[ATTR_BATCH_SIZE] == 3
        assert span.attributes["rayfeed.model.version"] == "v1"
    assert len({(s.start_time, s.end_time) for s in spans}) == 1


def test_batch_span_linked_mode_and_errors(exporter, tracer):
    carriers, ids = _request_carriers(tracer, 2)
    with pytest.raises(ValueError):
        with batch_span("ranking.model", [*carriers, {}], mode="linked", tracer=tracer):
            raise ValueError("boom")
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "ranking.model"]
    assert span.parent is None
    assert [(link.context.trace_id, link.context.span_id) for link in span.links] == ids
    assert span.status.status_code is StatusCode.ERROR
    with pytest.raises(ValueError, match="mode"):
        with batch_span("x", carriers, mode="nope", tracer=tracer):  # type: ignore[arg-type]
            pass


def test_no_exporter_without_endpoint_and_otlp_with_it():
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    def exporters(provider: TracerProvider):
        return [getattr(p, "span_exporter", None) for p in provider._active_span_processor._span_processors]

    quiet = build_tracer_provider(ObservabilityConfig(), env={})
    assert exporters(quiet) == []
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SERVICE_NAME": "feed-test"}
    loud = build_tracer_provider(ObservabilityConfig(), env=env)
    (exporter,) = exporters(loud)
    assert isinstance(exporter, OTLPSpanExporter)
    assert exporter._endpoint == "http://127.0.0.1:9/v1/traces"
    assert loud.resource.attributes["service.name"] == "feed-test"
    assert exporters(build_tracer_provider(env={**env, "OTEL_TRACES_EXPORTER": "none"})) == []
    assert exporters(build_tracer_provider(env={**env, "OTEL_SDK_DISABLED": "true"})) == []
    for provider in (quiet, loud):
        provider.shutdown()


def test_sampling_ratio_from_config_unless_env_sets_sampler():
    exporter = [SimpleSpanProcessor(InMemorySpanExporter())]
    provider = build_tracer_provider(ObservabilityConfig(sampling_ratio=0.25), env={}, processors=exporter)
    assert "0.25" in provider.sampler.get_description()
    assert provider.resource.attributes["service.name"] == "rayfeed"
    never = build_tracer_provider(ObservabilityConfig(sampling_ratio=1.0), env={"OTEL_TRACES_SAMPLER": "always_off"},
                                  processors=exporter)
    assert never.sampler.get_description() == "AlwaysOffSampler"
    tracer = never.get_tracer("t")
    with tracer.start_as_current_span("x") as span:
        assert not span.is_recording()


def test_user_hash_is_keyed_and_stable():
    assert hash_user_id(42, "a") == hash_user_id("42", "a")
    assert hash_user_id(42, "a") != hash_user_id(42, "b")
    assert len(hash_user_id(42, "a")) == 16


def test_setup_tracing_installs_one_global_provider(monkeypatch):
    from opentelemetry import trace

    from observability import tracing

    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    first = tracing.setup_tracing(ObservabilityConfig())
    assert tracing.setup_tracing(ObservabilityConfig(sampling_ratio=0.1)) is first
    assert trace.get_tracer_provider() is first


def test_the_tracer_is_made_once_per_provider_and_records_to_that_provider():
    def provider_with(exporter: InMemorySpanExporter) -> TracerProvider:
        return build_tracer_provider(ObservabilityConfig(), env={}, processors=[SimpleSpanProcessor(exporter)])

    first_spans, second_spans = InMemorySpanExporter(), InMemorySpanExporter()
    first, second = provider_with(first_spans), provider_with(second_spans)
    try:
        assert get_tracer(first) is get_tracer(first)
        assert get_tracer(second) is not get_tracer(first)
        get_tracer(first).start_span("one").end()
        get_tracer(second).start_span("two").end()
        assert [s.name for s in first_spans.get_finished_spans()] == ["one"]
        assert [s.name for s in second_spans.get_finished_spans()] == ["two"]
    finally:
        first.shutdown()
        second.shutdown()


def test_nothing_is_recorded_without_an_exporter_and_unsampled_requests_get_no_stage_spans():
    """No exporter, no processor: spans would be built only to be dropped, so none is recorded
    (ids still propagate). With an exporter, an unsampled request's stages make no span at all."""
    quiet = build_tracer_provider(ObservabilityConfig(sampling_ratio=1.0), env={})
    assert quiet.sampler.get_description() == "AlwaysOffSampler"
    with quiet.get_tracer("t").start_as_current_span("request") as span:
        assert not span.is_recording() and span.get_span_context().trace_id != 0
        assert "traceparent" in inject_context()

    exporter = InMemorySpanExporter()
    provider = build_tracer_provider(ObservabilityConfig(sampling_ratio=1.0), env={},
                                     processors=[SimpleSpanProcessor(exporter)])
    tracer = provider.get_tracer("t")
    hook = TracingStageHook("organic", tracer=tracer)
    unsampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"}
    sampled = {"traceparent": "00-0af7651916cd43dd8448eb211c80319d-b7ad6b7169203331-01"}
    for carrier in (unsampled, sampled):
        with hook.part("retrieval", carrier):
            for stage in ("ann", "merge"):
                with hook.span(stage, "source") as figures:
                    figures["n_out"] = 3
                hook.record(StageRecord(stage, "source", 0.001, 0, 3))
    for carrier in (unsampled, sampled):  # a batch's per-request stages run within the caller's context
        with hook.within(carrier):
            with hook.span("top_k", "selector"):
                pass
            hook.record(StageRecord("top_k", "selector", 0.001, 3, 2))
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["organic.ann", "organic.merge", "organic.top_k", "retrieval"]  # the sampled request's only
    assert {s.context.trace_id for s in exporter.get_finished_spans()} == {0x0af7651916cd43dd8448eb211c80319d}
    provider.shutdown()
