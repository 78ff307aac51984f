"""FeedIngress: the HTTP API (FastAPI) and the Collator, in one deployment.

Per feed request: read the feed state from Redis in one round trip (served items of the cursor
chain, hidden items/creators, session counters), then start the organic chain
Retrieval → Ranking → Reranking as chained DeploymentResponses (each stage hands its output
straight to the next, never back through here) and, concurrently, the Auction; collate;
release the ads the collator did not place; record the page's items for the next cursor.

The collator lives here because it is cheap (~1 ms) and needs both branches: a separate
Collator deployment would add a hop (~7 ms of Ray CPU) to every request for no parallelism.

Failure behaviour: Redis unreachable → the organic feed is still served, ads are withheld,
no cursor is issued (no served-set can be stored), an error metric and a log line say so, and
/readyz reports `redis` as the part that is down. Bad input is a 4xx naming the field.

Reliability (docs/reliability.md): every Redis call of this replica goes through one circuit
breaker (`app.state.breaker`): after `api.redis_breaker_failures` consecutive failures Redis is
skipped (≈0 ms, fail closed) until a probe succeeds; its state is a metric and part of /readyz.
Public endpoints are rate limited per client address (`app.api.ratelimit`, 429 + Retry-After).
A feed request has a deadline (`api.request_timeout_s`, lowered by an `X-Request-Timeout-Ms`
header) carried to every stage in the request messages: a stage reached past it does no work,
the ingress cancels the calls still running and answers 504. Ads are optional to a page: an
auction that fails or is late is cancelled and the page is served without ads (its
reservations expire by TTL). A stage replica that dies mid-request costs one retry of the
(read-only) organic chain, not a failed feed.
"""
# No `from __future__ import annotations` here: FastAPI must see real annotations on the
# methods Serve wraps (with strings, `request: Request` became a required query parameter).
import asyncio
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import TypeAdapter, ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from ray.serve.handle import DeploymentHandle

from app.ads.types import WithheldReason
from app.api.admission import AdaptiveConcurrencyLimit
from app.api.cursor import Cursor, CursorCodec, InvalidCursor
from app.api.ratelimit import TokenBucketLimiter
from app.api.validation import validation_problems
from app.api.responses import bearer_token_matches, load_admin_token, page_items
from app.api.schemas import Event, EventsAck, FeedResponse, ReadyResponse, ReloadRequest, WeightsRequest
from app.artifacts import ArtifactNotFound, ArtifactStore
from app.catalog import Catalog
from app.collator.collator import Collator
from app.data import load_dataset
from app.state.counters import EngagementCounters, user_topics
from app.config import ConfigError, RayfeedConfig, _deep_merge, config_from_mapping
from app.pipeline import StageRecord, timed_step
from app.state._redis import async_fail_fast_client
from app.state.breaker import BreakerState, CircuitBreaker
from app.state.clock import ReplayClock
from app.state.errors import StoreUnavailable
from app.state.events import EventStream, StreamEvent
from app.state.membership import ReplicaMembership
from app.state.sessions import FeedState, FeedStateStore, StreamAppend
from deployments.batching import AdaptiveBatcher
from deployments.common import (
    OVERRIDES_KEY,
    DeploymentSettings,
    ReloadableDeployment,
    ms,
    observability,
    resolve_version,
    serving_clock,
)
from deployments.messages import (
    AdsAnswer, AdsRequest, DeadlineExceeded, OrganicPage, OrganicRequest, batch_deadline, check_deadline,
)
from observability.live_monitor import PredictionRecord
from observability.metrics import ObservabilityHook
from observability.tracing import (
    ATTR_BATCH_SIZE, ATTR_MODEL_VERSION, ATTR_N_OUT, hash_user_id, inject_context, record_span, request_span,
)

log = logging.getLogger("rayfeed.serve")

MAX_ADMIN_BODY_BYTES = 64 * 1024
MEMBERSHIP_KEY = "rf:members:ingress"  # live ingress replicas (app/state/membership.py)
TIMEOUT_HEADER = "x-request-timeout-ms"  # a client may shorten (never lengthen) its feed deadline
ADS_GRACE_S = 0.1  # how long a finished organic page waits for a late auction before going without ads
_EVENTS = TypeAdapter(list[Event])

app = FastAPI(
    title="rayfeed",
    description="Feed ranking on Ray Serve: retrieval → ranking → reranking ∥ ads auction → collator.",
    version="1",
    # The ingress span is ours (observability.tracing.request_span): it honours the client's
    # traceparent and carries the user id only as a keyed hash. FastAPI's native server span would
    # be a second, parallel ingress span with the raw `user_id` in `url.query`; off. Request
    # counts and latency are rayfeed's own metrics (observability.metric_names), not FastAPI's.
    telemetry={"tracing": False, "metrics": False, "logs": False},
)


class ApiError(Exception):
    """An error answered as JSON naming the field at fault."""

    def __init__(self, status: int, field: str | None, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers


def _error_body(status: int, problems: list[dict[str, Any]]) -> dict[str, Any]:
    return {"error": {400: "bad_request", 401: "unauthorized", 404: "not_found", 413: "too_large",
                      422: "validation", 429: "rate_limited", 503: "unavailable",
                      504: "deadline_exceeded"}.get(status, "error"), "detail": problems}


@app.exception_handler(ApiError)
async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    return JSONResponse(_error_body(exc.status, [{"field": exc.field, "message": exc.message}]), exc.status,
                        headers=exc.headers)


class _ValidationFailure(Exception):
    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("validation failed")
        self.problems = problems


@app.exception_handler(_ValidationFailure)
async def _validation_failure(request: Request, exc: _ValidationFailure) -> JSONResponse:
    return JSONResponse(_error_body(422, exc.problems), 422)


@app.exception_handler(RequestValidationError)
async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse(_error_body(422, validation_problems(list(exc.errors()))), 422)


def _catalog(config: RayfeedConfig, previous: "IngressState | None") -> Catalog:
    """Loaded once per dataset, not on every reconfigure."""
    if previous is not None and previous.config.data == config.data:
        return previous.catalog
    return Catalog.from_dataset(load_dataset(config.data))


@dataclass(frozen=True)
class IngressState:
    config: RayfeedConfig
    version: str
    clock: ReplayClock
    collator: Collator
    admin_token: str | None
    hook: ObservabilityHook  # the ingress's own steps (feed-state read, collation): spans + stage metrics
    limiter: TokenBucketLimiter | None  # per-client buckets of this replica; None: no rate limit
    catalog: Catalog  # topics and creators of the items events name (for the counters)
    counters: EngagementCounters  # real-time counters moved atomically with the event append


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


def request_deadline(request: Request, timeout_s: float, now: float) -> float:
    """Unix time by which the feed must be answered: `timeout_s` from now, or sooner when the
    client's X-Request-Timeout-Ms header asks for it (422 naming the header when malformed)."""
    raw = request.headers.get(TIMEOUT_HEADER)
    if raw is not None:
        if not raw.strip().isdigit() or not 1 <= int(raw) <= 600_000:
            raise ApiError(422, TIMEOUT_HEADER, "must be an integer number of milliseconds in 1..600000")
        timeout_s = min(timeout_s, int(raw) / 1000.0)
    return now + timeout_s


async def await_by(deadline: float | None, response, *upstream) -> Any:
    """Await a DeploymentResponse until `deadline`; past it, cancel it and the chained
    responses it was given (`upstream`), and raise DeadlineExceeded."""
    if deadline is None:
        return await response
    remaining = deadline - time.time()
    try:
        if remaining <= 0:
            raise asyncio.TimeoutError
        return await asyncio.wait_for(asyncio.ensure_future(response), remaining)
    except asyncio.TimeoutError:
        for r in (response, *upstream):
            r.cancel()
        raise DeadlineExceeded("ingress", time.time() - deadline) from None


@serve.deployment(name="FeedIngress")
@serve.ingress(app)
class FeedIngress(ReloadableDeployment[IngressState]):
    stage_name = "ingress"

    def __init__(
        self,
        retrieval: DeploymentHandle,
        ranking: DeploymentHandle,
        reranking: DeploymentHandle,
        auction: DeploymentHandle,
        monitor: DeploymentHandle | None = None,
    ) -> None:
        super().__init__()
        self.retrieval, self.ranking, self.reranking, self.auction = retrieval, ranking, reranking, auction
        self.monitor = monitor  # the live monitor: bound here so Serve deploys it; never on the request path
        self._redis = None
        self._redis_url: str | None = None
        self._codec: CursorCodec | None = None
        self._breaker: CircuitBreaker | None = None
        self._published_breaker_state: BreakerState | None = None
        self._admission: AdaptiveConcurrencyLimit | None = None  # built from config on first use
        self._admission_config: RayfeedConfig | None = None
        # Stage calls carry every request that arrived while earlier calls were out (batching.py).
        settings = DeploymentSettings()
        self._chains = AdaptiveBatcher(self._organic_chain, settings.chain_max_in_flight, settings.chain_max_batch_size)
        self._auctions = AdaptiveBatcher(self._auction_call, settings.chain_max_in_flight, settings.chain_max_batch_size)
        self._releases = AdaptiveBatcher(self._release_call, 1, settings.chain_max_batch_size * 4)
        self._background: set[asyncio.Task] = set()
        self._chain_queued_ns: dict[str, int] = {}  # request id -> when it joined the chain batcher
        # The rate limit is cluster-wide: this replica enforces 1/n of it, n from a Redis heartbeat.
        self._replica_id = uuid.uuid4().hex
        self._live_replicas = 1
        self._heartbeat: asyncio.Task | None = None

    def after_swap(self, state: IngressState, settings: DeploymentSettings) -> None:
        self._chains.resize(settings.chain_max_in_flight, settings.chain_max_batch_size)
        self._auctions.resize(settings.chain_max_in_flight, settings.chain_max_batch_size)
        self._releases.resize(1, settings.chain_max_batch_size * 4)
        self._take_rate_limit_share(state)
        if self._heartbeat is None and state.config.redis_url:
            self._heartbeat = asyncio.get_running_loop().create_task(self._count_replicas())

    def _take_rate_limit_share(self, state: IngressState) -> None:
        if state.limiter is not None:
            a, n = state.config.api, self._live_replicas
            state.limiter.rescale(a.rate_limit_per_s / n, max(1.0, a.rate_limit_burst / n))

    async def _count_replicas(self) -> None:
        """Heartbeat into the ingress group every `api.replica_heartbeat_s`; on Redis trouble the
        last count stands (the limit errs towards the share it had)."""
        while True:
            state = self._state
            if state is not None and state.config.redis_url:
                config = state.config
                members = ReplicaMembership(self._client(config), MEMBERSHIP_KEY, 3 * config.api.replica_heartbeat_s)
                try:
                    self._live_replicas = await self._guarded(
                        config, "membership", lambda: members.heartbeat(self._replica_id, time.time()))
                    self._take_rate_limit_share(state)
                except StoreUnavailable as exc:
                    self._redis_down(config, "membership", exc)
            await asyncio.sleep(state.config.api.replica_heartbeat_s if state is not None else 1.0)

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: IngressState | None) -> IngressState:
        version = resolve_version(config)
        hook = ObservabilityHook("ingress", observability(config), model_version=version.version)
        a = config.api
        limiter = (TokenBucketLimiter(a.rate_limit_per_s, a.rate_limit_burst, a.rate_limit_max_clients)
                   if a.rate_limit_per_s > 0 else None)
        catalog = _catalog(config, previous)
        counters = EngagementCounters.from_catalog(catalog, config.retrieval.dynamic.engagement_types,
                                                   a.counter_retention_days)
        return IngressState(config, version.version, serving_clock(version), Collator(config.collator),
                            load_admin_token(os.environ, a.admin_token_env, a.admin_token_file), hook, limiter, catalog, counters)

    def _rate_limit(self, request: Request, state: IngressState, route: str) -> None:
        """429 with Retry-After when this client's bucket is empty (keyed by its address; this
        replica's share of the cluster-wide limit)."""
        if state.limiter is None:
            return
        client = request.client.host if request.client else "unknown"
        wait = state.limiter.acquire(client)
        if wait > 0:
            observability(state.config).record_shed(route, "rate_limited")
            raise ApiError(429, None, f"rate limit of {state.config.api.rate_limit_per_s:g} requests/s per client",
                           {"Retry-After": str(max(1, math.ceil(wait)))})

    # -- Redis -------------------------------------------------------------------------------
    def _client(self, config: RayfeedConfig):
        if not config.redis_url:
            return None
        if self._redis is None or self._redis_url != config.redis_url:
            self._redis = async_fail_fast_client(config.redis_url, config.api.redis_timeout_s,
                                                 config.api.redis_max_connections)
            self._redis_url, self._codec = config.redis_url, None
        return self._redis

    def _store(self, config: RayfeedConfig) -> FeedStateStore | None:
        client = self._client(config)
        if client is None:
            return None
        a = config.api
        return FeedStateStore(client, a.served_ttl_s, a.session_ttl_s, a.hidden_ttl_s, a.quick_bounce_s)

    async def _cursor_codec(self, store: FeedStateStore, config: RayfeedConfig) -> CursorCodec:
        if self._codec is None:
            self._codec = CursorCodec(await store.cursor_secret(), config.api.cursor_max_age_s)
        return self._codec

    def _redis_down(self, config: RayfeedConfig, op: str, exc: Exception) -> None:
        if getattr(exc, "skipped", False):
            return  # counted by `rayfeed_redis_skipped_total`; the breaker's opening was logged
        observability(config).redis_error(op)
        log.warning("redis unavailable (%s): %s", op, exc)

    def _breaker_for(self, config: RayfeedConfig) -> CircuitBreaker:
        a = config.api
        b = self._breaker
        if b is None or (b.failure_threshold, b.reset_after_s) != (a.redis_breaker_failures, a.redis_breaker_reset_s):
            self._breaker = CircuitBreaker(a.redis_breaker_failures, a.redis_breaker_reset_s)
        return self._breaker

    def _publish_breaker(self, config: RayfeedConfig, breaker: CircuitBreaker) -> None:
        state = breaker.state
        if state != self._published_breaker_state:
            if state == BreakerState.OPEN:
                log.warning("redis circuit breaker open: Redis skipped for %.1fs at a time (organic only, no ads)",
                            breaker.reset_after_s)
            elif self._published_breaker_state is not None:
                log.info("redis circuit breaker %s", state.name.lower())
            self._published_breaker_state = state
            observability(config).set_redis_breaker_state(int(state))

    async def _guarded(self, config: RayfeedConfig, op: str, call):
        """Run `call()` (Redis work raising StoreUnavailable) through the circuit breaker. An
        open breaker raises StoreUnavailable at once, marked `skipped`."""
        breaker = self._breaker_for(config)
        if not breaker.allow():
            observability(config).redis_skipped(op)
            self._publish_breaker(config, breaker)
            exc = StoreUnavailable(f"{op}: skipped, Redis circuit breaker open")
            exc.skipped = True  # type: ignore[attr-defined]
            raise exc
        try:
            result = await call()
        except StoreUnavailable:
            breaker.record_failure()
            self._publish_breaker(config, breaker)
            raise
        breaker.record_success()
        self._publish_breaker(config, breaker)
        return result

    # -- feed ----------------------------------------------------------------------------------
    @app.get("/v1/feed", response_model=FeedResponse, response_model_exclude_none=True)
    async def feed(
        self,
        request: Request,
        user_id: int = Query(..., ge=1, le=2**62, description="the user whose feed this is"),
        limit: int | None = Query(None, description="items on this page (bounds: api.min_limit..api.max_limit)"),
        cursor: str | None = Query(None, min_length=1, max_length=CursorCodec.MAX_LENGTH),
        explain: bool = Query(False, description="add per-item provenance and removal counts"),
    ) -> JSONResponse:
        started = time.perf_counter()
        state = await self.state()
        config, metrics = state.config, observability(state.config)
        try:
            self._rate_limit(request, state, "feed")
            deadline = request_deadline(request, config.api.request_timeout_s, time.time())
        except ApiError as exc:
            metrics.record_request(exc.status, time.perf_counter() - started)
            raise
        limit = config.api.default_limit if limit is None else limit
        if not config.api.min_limit <= limit <= config.api.max_limit:
            metrics.record_request(422, time.perf_counter() - started)
            raise ApiError(422, "limit", f"must be between {config.api.min_limit} and {config.api.max_limit}")
        request_id = uuid.uuid4().hex
        with request_span("GET /v1/feed", request.headers, user_id=user_id, request_id=request_id,
                          salt=config.observability.user_id_hash_salt) as span:
            try:
                body = await self._admitted(config, self._feed(state, user_id, limit, cursor, explain, request_id,
                                                               started, deadline))
                span.set_attribute(ATTR_MODEL_VERSION, body["model_version"])
                span.set_attribute(ATTR_N_OUT, len(body["items"]))
            except ApiError as exc:
                metrics.record_request(exc.status, time.perf_counter() - started)
                raise
            except BackPressureError as exc:
                metrics.record_request(503, time.perf_counter() - started)
                metrics.record_shed("feed", "overloaded")
                raise ApiError(503, None, f"overloaded: {exc}", {"Retry-After": "1"}) from None
            except (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError) as exc:
                metrics.record_request(503, time.perf_counter() - started)
                metrics.record_shed("feed", "unavailable")
                raise ApiError(503, None, f"a stage is restarting ({type(exc).__name__})", {"Retry-After": "1"}) from None
            except DeadlineExceeded as exc:
                metrics.record_request(504, time.perf_counter() - started)
                metrics.record_shed("feed", "deadline")
                raise ApiError(504, None, f"deadline exceeded ({exc}); retry later", {"Retry-After": "1"}) from None
        metrics.record_request(200, time.perf_counter() - started)
        return JSONResponse(body)

    async def _feed(self, state: IngressState, user_id: int, limit: int, cursor_token: str | None, explain: bool,
                    request_id: str, started: float, deadline: float) -> dict[str, Any]:
        config = state.config
        store = self._store(config)
        now = state.clock()
        timings: dict[str, float] = {}
        cursor: Cursor | None = None
        feed_state, redis_ok = FeedState(), store is not None
        t = time.perf_counter()
        if store is not None:
            async def read_state() -> tuple[Cursor | None, FeedState]:
                decoded = None
                if cursor_token is not None:
                    decoded = (await self._cursor_codec(store, config)).decode(cursor_token, user_id, time.time())
                return decoded, await store.read(user_id, decoded.session_id if decoded else None)

            try:
                with timed_step(state.hook, "feed_state", "hydrator") as figures:
                    cursor, feed_state = await self._guarded(config, "feed_state", read_state)
                    figures.update(served=len(feed_state.served_item_ids), hidden=len(feed_state.hidden_item_ids))
            except InvalidCursor as exc:
                raise ApiError(400, "cursor", str(exc)) from None
            except StoreUnavailable as exc:
                self._redis_down(config, "feed_state", exc)
                redis_ok = False
        if cursor_token is not None and not redis_ok:
            raise ApiError(503, "cursor", "pagination state unavailable (Redis); retry, or start without a cursor",
                           {"Retry-After": "1"})
        timings["state"] = ms(time.perf_counter() - t)
        session_id = cursor.session_id if cursor else uuid.uuid4().hex
        page_number = cursor.page if cursor else 1
        first_position = cursor.next_position if cursor else 1
        carrier = inject_context()

        organic_request = OrganicRequest(
            user_id, now, limit, request_id, feed_state.served_item_ids, feed_state.hidden_item_ids,
            feed_state.hidden_creator_ids, explain, carrier, deadline,
        )
        check_deadline(deadline, "ingress")  # e.g. the feed-state read was slow
        t = time.perf_counter()
        ads_call = None
        ads_withheld_late: str | None = None
        if redis_ok:
            n_slots = config.collator.ad_slots(limit)
            ads_call = asyncio.ensure_future(self._auctions.submit(AdsRequest(
                user_id, request_id, n_slots, now, session_id, feed_state.hidden_creator_ids, carrier, deadline)))
        try:
            organic = await self._organic(organic_request, deadline)
        except BaseException:
            if ads_call is not None:
                ads_call.cancel()  # its reservations, if any were made, expire by TTL
            raise
        ads_answer: AdsAnswer | None = None
        if ads_call is not None:
            ads_answer, ads_withheld_late = await self._ads_by(ads_call, min(deadline, time.time() + ADS_GRACE_S))
        assert isinstance(organic, OrganicPage)
        timings["organic_and_ads_wall"] = ms(time.perf_counter() - t)
        timings.update({k: v for k, v in organic.timings_ms.items()})
        ad_result = ads_answer.result if ads_answer else None
        if ads_answer is not None:
            timings["ads"] = ms(ads_answer.seconds)

        t = time.perf_counter()
        notifications = organic.notifications if page_number == 1 else []  # shown once per chain
        ads = ad_result.ads if ad_result else ()
        with timed_step(state.hook, "collator", "selector") as figures:
            page = state.collator.collate(organic.entries, ads, notifications, feed_state.session, limit)
            figures.update(n_in=len(organic.entries) + len(ads) + len(notifications), n_out=len(page.slots))
        timings["collate"] = ms(time.perf_counter() - t)
        if page.unplaced_ads:
            # Fire and forget: an unreleased reservation expires by itself (reservation_ttl_s).
            self._in_background(self._releases.submit((request_id, [a.ad_id for a in page.unplaced_ads])))

        organic_ids = [int(s.ref_id) for s in page.slots if s.kind == "organic"]
        n_ads = sum(1 for s in page.slots if s.kind == "ad")
        next_cursor = None
        if redis_ok and store is not None:
            try:
                prediction_log = self._prediction_log(state, user_id, request_id, page, organic, first_position)
                logged = await self._guarded(config, "record_page", lambda: store.record_page(
                    user_id, session_id, organic_ids, n_ads, append=prediction_log))
                if not logged:  # the page's writes went through, its prediction-log entry did not
                    observability(config).redis_error("predictions_log")
                more = len(organic.entries) > len(organic_ids) and page_number < config.api.max_pages
                if more:
                    codec = await self._cursor_codec(store, config)
                    next_cursor = codec.encode(Cursor(session_id, user_id, page_number + 1,
                                                      first_position + len(page.slots), time.time()))
            except StoreUnavailable as exc:
                self._redis_down(config, "record_page", exc)

        withheld = ads_withheld_late
        if not redis_ok:
            withheld = WithheldReason.STORE_UNAVAILABLE.value
        elif ad_result is not None and ad_result.withheld_reason is not None:
            withheld = ad_result.withheld_reason.value
        timings["total"] = ms(time.perf_counter() - started)
        body: dict[str, Any] = {
            "user_id": user_id,
            "items": page_items(page, first_position, explain, organic.provenance),
            "cursor": next_cursor,
            "request_id": request_id,
            "cold_start": organic.cold_start,
            "page": page_number,
            "model_version": organic.versions.get("ranking", state.version),
            "timings_ms": timings,
        }
        if withheld:
            body["ads_withheld"] = withheld
        if explain:
            body["explain"] = {
                "removed": organic.removed or {},
                "ads_removed": dict(ad_result.removed) if ad_result else {},
                "guardrails_fired": list(page.guardrails_fired),
                "rules": {"max_ads": page.rules.max_ads} if hasattr(page.rules, "max_ads") else {},
                "collator_score": {"organic_value": page.score.organic_value, "ad_revenue": page.score.ad_revenue,
                                   "experience_penalty": page.score.experience_penalty, "total": page.score.total},
                "solver": page.solver,
                "fallback": page.fallback,
                "versions": organic.versions,
                "served_before": len(feed_state.served_item_ids),
                "live_topics": await self._live_topics(config, user_id),
            }
        self._record_page_metrics(state, page)
        return body

    def _admission_for(self, config: RayfeedConfig) -> AdaptiveConcurrencyLimit | None:
        """This replica's in-flight bound, rebuilt only when a new config changes its settings
        (a reload keeps what it has learned)."""
        if config is not self._admission_config:
            self._admission_config = config
            wanted = AdaptiveConcurrencyLimit.from_api(config.api)
            if wanted is None or self._admission is None or wanted.settings != self._admission.settings:
                self._admission = wanted
        return self._admission

    async def _admitted(self, config: RayfeedConfig, work):
        """Admission control: past this replica's in-flight bound (adaptive, app/api/admission.py)
        answer 503 + Retry-After at once instead of queueing (the proxy's own queue-full 503 carries
        no Retry-After, and a queued request only grows everyone's latency)."""
        admission = self._admission_for(config)
        if admission is None:
            return await work
        if not admission.try_acquire():
            work.close()
            observability(config).record_shed("feed", "overloaded")
            raise ApiError(503, None, f"overloaded: {admission.limit} feeds in progress on this replica",
                           {"Retry-After": "1"})
        started = time.perf_counter()
        try:
            return await work
        finally:
            before = admission.limit
            admission.release(time.perf_counter() - started)
            if admission.limit != before:
                observability(config).set_admission_limit(admission.limit)

    async def _organic(self, request: OrganicRequest, deadline: float) -> OrganicPage:
        """This request's page from the next organic chain (shared with the requests that queued
        beside it), by its deadline. A client that goes away abandons only its own entry."""
        remaining = deadline - time.time()
        if remaining <= 0:
            raise DeadlineExceeded("ingress", -remaining)
        self._chain_queued_ns[request.request_id] = time.time_ns()
        try:
            return await asyncio.wait_for(self._chains.submit(request), remaining)
        except asyncio.TimeoutError:
            raise DeadlineExceeded("ingress", time.time() - deadline) from None
        finally:
            self._chain_queued_ns.pop(request.request_id, None)  # still there: never sent

    def _record_chain_wait(self, requests: list[OrganicRequest]) -> dict[str, float]:
        """Each request's wait in the chain batcher, up to now (its chain is being sent): an
        `ingress.chain_wait` span and stage metric, and the figure for the page's timings."""
        sent_ns, waits = time.time_ns(), {}
        state = self._state
        for request in requests:
            queued_ns = self._chain_queued_ns.pop(request.request_id, sent_ns)
            record_span("ingress.chain_wait", request.trace, queued_ns, sent_ns,
                        attributes={ATTR_BATCH_SIZE: len(requests)})
            if state is not None:
                state.hook.metrics.record_stage(StageRecord("chain_wait", "wait", (sent_ns - queued_ns) / 1e9, 1, 1),
                                                "ingress")
            waits[request.request_id] = ms((sent_ns - queued_ns) / 1e9)
        return waits

    async def _organic_chain(self, requests: list[OrganicRequest]) -> list[OrganicPage | Exception]:
        """One organic chain for a batch of requests. Read-only, so a chain whose replica died
        under it (a crash, a kill) is started once more while a deadline allows."""
        deadline = batch_deadline([r.deadline for r in requests])
        waits = self._record_chain_wait(requests)
        for attempt in (1, 2):
            # Chained responses: Ranking receives Retrieval's output directly, Reranking Ranking's.
            retrieved = self.retrieval.retrieve_batch.remote(requests)
            ranked = self.ranking.rank_batch.remote(retrieved)
            reranked = self.reranking.rerank_batch.remote(ranked)
            try:
                pages = await await_by(deadline, reranked, ranked, retrieved)
            except (RayActorError, ReplicaUnavailableError) as exc:
                if attempt == 2 or (deadline is not None and time.time() >= deadline):
                    raise
                log.warning("organic chain lost a replica (%s); retrying once", type(exc).__name__)
                continue
            except asyncio.CancelledError:
                for r in (retrieved, ranked, reranked):
                    r.cancel()
                raise
            for request, page in zip(requests, pages):
                if isinstance(page, OrganicPage):
                    page.timings_ms["chain_batch_size"] = float(len(requests))
                    page.timings_ms["chain_wait"] = waits[request.request_id]
            return pages
        raise AssertionError("unreachable")

    async def _auction_call(self, requests: list[AdsRequest]) -> list[AdsAnswer | Exception]:
        return await await_by(batch_deadline([r.deadline for r in requests]),
                              self.auction.serve_ads_batch.remote(requests))

    async def _release_call(self, releases: list[tuple[str, list[int]]]) -> list[None]:
        return await self.auction.release_batch.remote(releases)

    def _in_background(self, work) -> None:
        """Fire and forget, but keep a reference and log a failure: an unreleased reservation
        expires by itself (reservation_ttl_s)."""
        async def logged() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001
                log.warning("background release failed: %s", type(exc).__name__)

        task = asyncio.ensure_future(logged())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _ads_by(self, ads_call, by: float) -> tuple[AdsAnswer | None, str | None]:
        """The auction's answer by `by`, else (None, why): ads are optional to a page, so a late
        or failed auction is cancelled and the page goes without ads (fail closed)."""
        try:
            return await await_by(by, ads_call), None
        except DeadlineExceeded:
            return None, "deadline"
        except BackPressureError:
            return None, "overloaded"
        except Exception as exc:  # noqa: BLE001 - a dead Auction replica must not fail the feed
            log.warning("auction failed, page served without ads: %s", type(exc).__name__)
            return None, "auction_unavailable"

    def _prediction_log(self, state: IngressState, user_id: int, request_id: str, page, organic: OrganicPage,
                        first_position: int) -> StreamAppend | None:
        """The live monitor's record of this page, for requests Ranking sampled (it attached the
        per-head scores); sent with the page's other Redis writes. Never raises."""
        live = state.config.observability.live_monitor
        if not live.enabled or organic.head_scores is None:
            return None
        try:
            slots = [(int(s.ref_id), first_position + s.position - 1, int(s.item.creator_id))
                     for s in page.slots if s.kind == "organic"]
            record = PredictionRecord.for_page(
                request_id, hash_user_id(user_id, state.config.observability.user_id_hash_salt),
                organic.versions.get("ranking", state.version), time.time(), slots,
                [e.item_id for e in organic.entries], organic.head_scores, organic.monitor_sample)
            return StreamAppend(live.stream_key, record.to_fields(), live.stream_maxlen)
        except Exception:  # noqa: BLE001 - monitoring never fails a feed
            log.exception("prediction log record failed")
            return None

    async def _live_topics(self, config: RayfeedConfig, user_id: int) -> dict[str, float] | str:
        """Explain mode: the user's real-time topic counters (what the event stream says now)."""
        client = self._client(config)
        if client is None:
            return "no Redis"
        try:
            return await user_topics(client, user_id)
        except StoreUnavailable as exc:
            return f"unavailable: {exc}"

    def _record_page_metrics(self, state: IngressState, page) -> None:
        try:
            observability(state.config).record_page(
                [s.kind for s in page.slots],
                [s.item.creator_id for s in page.slots if s.kind == "organic"],
            )
        except Exception:  # noqa: BLE001 - metrics never fail a request
            log.exception("page metrics failed")

    # -- events --------------------------------------------------------------------------------
    @app.post("/v1/events", response_model=EventsAck, status_code=200)
    async def events(self, request: Request) -> EventsAck:
        started = time.perf_counter()
        state = await self.state()
        config, metrics = state.config, observability(state.config)
        self._rate_limit(request, state, "events")
        raw = await read_body_capped(request, config.api.max_body_bytes)
        try:
            payload = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, "body", f"not JSON: {exc}") from None
        if not isinstance(payload, list):
            raise ApiError(422, "body", "expected a JSON list of events")
        if len(payload) > config.api.max_events_per_request:
            raise ApiError(413, "body", f"at most {config.api.max_events_per_request} events per request")
        try:
            events = _EVENTS.validate_python(payload)
        except ValidationError as exc:
            raise _ValidationFailure(validation_problems(list(exc.errors()))) from None
        store = self._store(config)
        if store is None:
            raise ApiError(503, None, "no event store configured (REDIS_URL)")
        now = state.clock()
        stream_events = [self._stream_event(e, now) for e in events]
        stream = EventStream(store.client, config.api.event_stream_maxlen, config.api.event_dedup_ttl_s)
        try:
            flags = await self._guarded(config, "events_append",
                                        lambda: stream.append(stream_events, state.counters.ops_for(stream_events)))  # BEFORE the ack
        except StoreUnavailable as exc:
            self._redis_down(config, "events_append", exc)
            metrics.record_request(503, time.perf_counter() - started, route="events")
            raise ApiError(503, None, "event stream unavailable; retry the batch (it is de-duplicated)",
                           {"Retry-After": "1"}) from None
        accepted = [e for e, new in zip(stream_events, flags) if new]
        try:
            await self._guarded(config, "events_apply", lambda: store.apply_events(accepted))
        except StoreUnavailable as exc:  # on the stream already: consumers can rebuild the counters
            self._redis_down(config, "events_apply", exc)
        impressions = [(e.request_id, e.ad_id) for e in accepted
                       if e.type == "impression" and e.ad_id is not None and e.request_id]
        if impressions:
            try:
                await self.auction.commit_impressions.remote(impressions)
            except StoreUnavailable as exc:
                self._redis_down(config, "ads_commit", exc)
            except Exception as exc:  # noqa: BLE001 - the stream holds them; reservations expire
                log.warning("committing %d ad impressions failed: %s", len(impressions), exc)
        counts: dict[str, int] = {}
        for e in accepted:
            counts[e.type] = counts.get(e.type, 0) + 1
        for kind, n in counts.items():
            metrics.record_event(kind, n)
        metrics.record_request(200, time.perf_counter() - started, route="events")
        return EventsAck(accepted=len(accepted), duplicates=len(events) - len(accepted))

    @staticmethod
    def _stream_event(event: Event, now: float) -> StreamEvent:
        fields = event.model_dump(exclude={"event_id"})
        fields["ts"] = event.ts if event.ts is not None else now
        event_id = event.event_id or StreamEvent.derive_id(fields)
        return StreamEvent(event_id=event_id, **fields)

    # -- health --------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", response_model=ReadyResponse)
    async def readyz(self) -> JSONResponse:
        models: dict[str, str] = {}
        state = self._state
        models["ingress"] = state.version if state else "not loaded"
        for name, handle in (("retrieval", self.retrieval), ("ranking", self.ranking),
                             ("reranking", self.reranking), ("auction", self.auction)):
            try:
                models[name] = await asyncio.wait_for(handle.loaded_version.remote(), timeout=5.0)
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                models[name] = f"not ready: {type(exc).__name__}"
        models_ok = all(not v.startswith("not ") for v in models.values())
        redis = "not configured"
        if state is not None:
            store = self._store(state.config)
            if store is not None:
                try:
                    await self._guarded(state.config, "ping", store.ping)
                    redis = "ok"
                except StoreUnavailable as exc:
                    redis = f"unreachable: {exc}"
        breaker = self._breaker.state.name.lower() if self._breaker is not None else "closed"
        ready = models_ok and redis == "ok"
        body = ReadyResponse(ready=ready, degraded=models_ok and redis != "ok", models=models, redis=redis,
                             redis_breaker=breaker)
        return JSONResponse(body.model_dump(), 200 if ready else 503)

    # -- admin ---------------------------------------------------------------------------------
    def _authorise(self, request: Request, state: IngressState) -> None:
        if not bearer_token_matches(request.headers.get("authorization"), state.admin_token):
            raise ApiError(401, "Authorization", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    async def _write_overrides(self, state: IngressState, change: dict[str, Any]) -> dict[str, Any]:
        """Merge `change` into the admin overrides in Redis; every replica applies them within
        `admin_poll_s`. The merged configuration is validated first (422 naming the key)."""
        client = self._client(state.config)
        if client is None:
            raise ApiError(503, None, "admin overrides need Redis (REDIS_URL)")
        try:
            raw = await client.get(OVERRIDES_KEY)
            current = json.loads(raw) if raw else {"generation": 0, "overrides": {}}
            merged = _deep_merge(current.get("overrides", {}), change)
            try:
                config_from_mapping(_deep_merge(self._settings.rayfeed, merged), "admin override")
            except ConfigError as exc:
                raise ApiError(422, None, str(exc)) from None
            generation = int(current.get("generation", 0)) + 1
            await client.set(OVERRIDES_KEY, json.dumps({"generation": generation, "overrides": merged}))
        except StoreUnavailable as exc:
            raise ApiError(503, None, f"Redis unavailable: {exc}") from None
        except Exception as exc:
            if isinstance(exc, ApiError):
                raise
            raise ApiError(503, None, f"Redis unavailable: {type(exc).__name__}") from None
        return {"generation": generation, "overrides": merged, "applies_within_s": self._settings.admin_poll_s}

    async def _admin_body(self, request: Request, model):
        """Authorise FIRST (a caller without the token learns nothing, not even a 422), then parse."""
        state = await self.state()
        self._authorise(request, state)
        raw = await read_body_capped(request, MAX_ADMIN_BODY_BYTES)
        try:
            return state, model.model_validate_json(raw or b"{}")
        except ValidationError as exc:
            raise _ValidationFailure(validation_problems(list(exc.errors()))) from None

    @app.post("/admin/reload", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": ReloadRequest.model_json_schema()}}}})
    async def admin_reload(self, request: Request) -> dict[str, Any]:
        state, body = await self._admin_body(request, ReloadRequest)
        if body.version is not None:
            try:
                ArtifactStore(Path(state.config.artifacts.root).resolve()).get(body.version)
            except (ArtifactNotFound, ValueError) as exc:
                raise ApiError(404, "version", str(exc)) from None
        return await self._write_overrides(state, {"artifacts": {"version": body.version}})

    @app.post("/admin/weights", openapi_extra={"requestBody": {"content": {"application/json": {
        "schema": WeightsRequest.model_json_schema()}}}})
    async def admin_weights(self, request: Request) -> dict[str, Any]:
        state, body = await self._admin_body(request, WeightsRequest)
        change: dict[str, Any] = {}
        collator = {k: v for k, v in body.model_dump(include={"alpha", "beta", "gamma"}).items() if v is not None}
        if collator:
            change["collator"] = collator
        if body.ranking is not None:
            weights = {k: v for k, v in body.ranking.model_dump().items() if v is not None}
            if weights:
                change["ranking"] = {"weights": weights}
        if not change:
            raise ApiError(422, "body", "give at least one of alpha, beta, gamma, ranking")
        return await self._write_overrides(state, change)

