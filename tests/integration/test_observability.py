"""Observability of the served app, end to end: one trace per request across every deployment,
and the registry's metric names in a real scrape of Ray's Prometheus endpoint."""
from __future__ import annotations

import re
import secrets
import time

import httpx
import pytest

from app.retrieval.sources import ANN, COENGAGEMENT, SOCIAL, TRENDING
from observability import metric_names as m
from observability.metric_names import exported_series
from observability.tracing import ATTR_BATCH_SIZE, ATTR_MODEL_VERSION, ATTR_N_IN, ATTR_N_OUT, ATTR_USER, hash_user_id
from tests.integration.conftest import ServedApp
from tests.integration.otlp_receiver import ReceivedSpan

pytestmark = pytest.mark.integration

INGRESS = "GET /v1/feed"
# Every stage of one feed request, under the span of the deployment that runs it.
EXPECTED_CHILDREN: dict[str, set[str]] = {
    INGRESS: {"ingress.feed_state", "retrieval", "ranking", "reranking", "auction", "ingress.collator"},
    "retrieval": {"retrieval.query_hydration", *(f"retrieval.{s}" for s in (ANN, COENGAGEMENT, SOCIAL, TRENDING)),
                  "retrieval.source_features", "retrieval.seen_items", "retrieval.source_merge"},
    "ranking": {"ranking.batch_wait", "ranking.pre_ranker", "ranking.cascade_cut", "ranking.multitask_ranker",
                "ranking.ranked_top_k"},
    "reranking": {"reranking.mmr_selector", "reranking.creator_cap_selector", "reranking.notifications"},
    "auction": {"ads.targeting", "ads.cap_budget_hydration", "ads.eligibility", "ads.ad_ranker", "ads.auction"},
}
EXPECTED = set(EXPECTED_CHILDREN) | set().union(*EXPECTED_CHILDREN.values())
USER = 42


def test_one_trace_holds_every_stage_with_its_parentage(served_app: ServedApp):
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    with served_app.client() as c:
        response = c.get("/v1/feed", params={"user_id": USER, "limit": 20},
                         headers={"traceparent": f"00-{trace_id}-{client_span}-01"})
    assert response.status_code == 200, response.text
    body = response.json()

    spans = served_app.otlp.wait_for(trace_id, lambda got: EXPECTED <= {s.name for s in got})
    names = [s.name for s in spans]
    assert EXPECTED <= set(names), f"missing spans: {sorted(EXPECTED - set(names))}"
    by_id = {s.span_id: s for s in spans}
    one = {name: next(s for s in spans if s.name == name) for name in EXPECTED_CHILDREN}

    # The client's trace continues: the ingress span is the child of the client's span.
    ingress = one[INGRESS]
    assert ingress.parent_span_id == client_span
    assert ingress.attributes["rayfeed.request_id"] == body["request_id"]
    # Parentage across the deployment hops: each stage under its deployment's span, each
    # deployment's span under the ingress span.
    for parent_name, children in EXPECTED_CHILDREN.items():
        for child in children:
            matching = [s for s in spans if s.name == child]
            assert len(matching) == 1, f"{child}: {len(matching)} spans"
            assert matching[0].parent_span_id == one[parent_name].span_id, f"{child} is not under {parent_name}"
    for span in spans:  # nothing else in the trace escapes the request's span
        assert span is ingress or _descends_from(span, ingress, by_id), f"{span.name} is not under the ingress span"

    # Attributes: the user only as a keyed hash, counts in/out, model version, batch size.
    assert ingress.attributes[ATTR_USER] == hash_user_id(USER, "rayfeed") != str(USER)
    assert not any("user_id" in key and key != ATTR_USER for s in spans for key in s.attributes)
    assert not any(f"user_id={USER}" in str(v) for s in spans for v in s.attributes.values())
    version = body["model_version"]
    for name in ("retrieval", "ranking", "reranking", "auction", "ranking.multitask_ranker"):
        assert one.get(name, _named(spans, name)).attributes[ATTR_MODEL_VERSION] == version
    for span in spans:
        if "rayfeed.stage.kind" in span.attributes:  # every pipeline stage
            assert isinstance(span.attributes[ATTR_N_IN], int) and isinstance(span.attributes[ATTR_N_OUT], int)
            assert span.attributes[ATTR_MODEL_VERSION] == version
    merged = _named(spans, "retrieval.source_merge")
    assert merged.attributes[ATTR_N_IN] >= merged.attributes[ATTR_N_OUT] > 0
    model = _named(spans, "ranking.multitask_ranker")
    # The cascade: the pre-ranker scores every merged candidate, the DCN what the cut passed on.
    pre, cut = _named(spans, "ranking.pre_ranker"), _named(spans, "ranking.cascade_cut")
    assert pre.attributes[ATTR_N_IN] == cut.attributes[ATTR_N_IN] == merged.attributes[ATTR_N_OUT]
    assert model.attributes[ATTR_BATCH_SIZE] >= 1 and model.attributes[ATTR_N_IN] == cut.attributes[ATTR_N_OUT]
    assert cut.attributes[ATTR_N_OUT] < cut.attributes[ATTR_N_IN]
    wait = _named(spans, "ranking.batch_wait")
    assert wait.end_ns <= model.start_ns + 1_000_000  # queued, then scored (1 ms: clock granularity)
    assert one[INGRESS].attributes[ATTR_N_OUT] == len(body["items"])
    assert _named(spans, "ingress.collator").attributes[ATTR_N_OUT] == len(body["items"])


def test_a_request_without_traceparent_starts_its_own_trace(served_app: ServedApp):
    with served_app.client() as c:
        request_id = c.get("/v1/feed", params={"user_id": USER, "limit": 10}).json()["request_id"]
    deadline = time.monotonic() + 30
    roots: list[ReceivedSpan] = []
    while time.monotonic() < deadline and not roots:
        roots = [s for s in list(served_app.otlp.spans) if s.attributes.get("rayfeed.request_id") == request_id]
        time.sleep(0.1)
    assert len(roots) == 1 and roots[0].parent_span_id == ""
    spans = served_app.otlp.wait_for(roots[0].trace_id, lambda got: EXPECTED <= {s.name for s in got})
    assert EXPECTED <= {s.name for s in spans}


def test_registry_series_appear_in_a_scrape_of_the_running_app(served_app: ServedApp):
    with served_app.client() as c:
        for user in (3, 42, 77):
            assert c.get("/v1/feed", params={"user_id": user, "limit": 10}).status_code == 200
        events = [{"user_id": 3, "item_id": 1, "type": "click", "request_id": "scrape-test", "position": 1}]
        assert c.post("/v1/events", json=events).status_code == 200
    expected = {
        m.REQUESTS.series(), m.REQUEST_LATENCY.series("bucket"), m.REQUEST_LATENCY.series("count"),
        m.STAGE_LATENCY.series("bucket"), m.STAGE_CANDIDATES_IN.series(), m.STAGE_CANDIDATES_OUT.series(),
        m.PAGE_ITEMS.series(), m.PAGE_DIVERSITY.series("bucket"), m.EVENTS.series(),
    }
    found = wait_for_series(expected)
    assert expected <= set(found), f"not exported: {sorted(expected - set(found))}"
    # Nothing rayfeed exports is missing from the registry (a name typed by hand would be).
    ours = {name for name in found if name.startswith("ray_rayfeed_")}
    assert ours <= exported_series(), sorted(ours - exported_series())
    # Stage latency carries every pipeline that served the requests.
    pipelines = {labels.get("pipeline") for labels in found[m.STAGE_LATENCY.series("count")]}
    assert {"ingress", "retrieval", "ranking", "reranking", "ads"} <= pipelines


def metrics_url() -> str:
    import ray

    node = next(n for n in ray.nodes() if n["Alive"])
    return f"http://{node['NodeManagerAddress']}:{node['MetricsExportPort']}/metrics"


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape() -> dict[str, list[dict[str, str]]]:
    """Series name -> the label sets exported under it (Prometheus text format)."""
    found: dict[str, list[dict[str, str]]] = {}
    for line in httpx.get(metrics_url(), timeout=10).text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            found.setdefault(match.group(1), []).append(dict(_LABEL.findall(match.group(3) or "")))
    return found


def wait_for_series(names: set[str], timeout_s: float = 60.0) -> dict[str, list[dict[str, str]]]:
    """Ray exports what replicas record on its report interval: poll until `names` appear."""
    deadline = time.monotonic() + timeout_s
    found = scrape()
    while not names <= set(found) and time.monotonic() < deadline:
        time.sleep(0.5)
        found = scrape()
    return found


def _named(spans: list[ReceivedSpan], name: str) -> ReceivedSpan:
    return next(s for s in spans if s.name == name)


def _descends_from(span: ReceivedSpan, ancestor: ReceivedSpan, by_id: dict[str, ReceivedSpan]) -> bool:
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        if span.span_id == ancestor.span_id:
            return True
    return False
