"""FeedIngress: the HTTP API (FastAPI on Ray Serve). Each route converts, calls and answers.

`GET /v1/feed`: read the page state from Redis (redis_guard.py), send the organic chain and,
beside it, the auction (stage_client.py), assemble the page with the same code the in-process
service runs (`app.page.assemble_page`), then record its items and sign the next cursor.
Elsewhere: HTTP errors, bodies, deadlines, OpenAPI (http.py); the guarded Redis (redis_guard.py); stage calls
(stage_client.py); rate limit, admission (guards.py); events, ids (app/api/); admin overrides (app/state/overrides.py).

Failure behaviour: Redis unreachable → organic feed served, ads withheld, no cursor, an error metric
and a log line, /readyz reports `redis` down. Bad input is a 4xx naming the field. A feed's deadline
(`api.request_timeout_s`, or `X-Request-Timeout-Ms`) goes to every stage: past it, a 504.
"""
# No `from __future__ import annotations` here: FastAPI must see real annotations on the
# methods Serve wraps (with strings, `request: Request` became a required query parameter).
# Module-level helpers come before the class: @serve.ingress pickles it by value when decorated.
import asyncio
import dataclasses
import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from app.ads.server import AdsRequest
from app.api.cursor import CursorCodec
from app.api.errors import ApiError
from app.api.events import ad_impressions, counts_by_type, parse_events, stream_events_of, with_internal_ids
from app.api.ids import ApiIds
from app.api.responses import load_admin_token
from app.api.schemas import (
    DeletedItem, EventBatch, EventsAck, FeedResponse, NoBody, PublishAck, PublishRequest, ReadyResponse, ReloadRequest,
    TakedownKind, TakedownRequest, WeightsRequest)
from app.catalog import Catalog
from app.collator.collator import Collator
from app.data import load_dataset_for
from app.organic import OrganicRequest
from app.page import assemble_page
from app.pipeline.runner import ms_since
from app.state.clock import ReplayClock
from app.state.counters import EngagementCounters
from app.state.errors import StoreUnavailable
from app.state.events import EventStream
from app.freshness.published import ItemBase, PublishedItems
from app.state.takedowns import TakedownFollower
from config import RayfeedConfig
from deployments import admin, http, publishing
from deployments.common import (
    DeploymentSettings, Loaded, ReloadableDeployment, follow_takedowns, load_once, observability, resolve_version,
    serving_clock, stage_hook,
)
from deployments.guards import Admission, RateLimitShare
from deployments.messages import check_deadline
from deployments.redis_guard import GuardedRedis, readiness
from deployments.stage_client import StageClient
from observability.live_monitor import prediction_log_entry
from observability.metrics import ObservabilityHook
from observability.tracing import ATTR_MODEL_VERSION, ATTR_N_OUT, inject_context, request_span

log = logging.getLogger("rayfeed.serve")

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
http.install(app)


def _catalog_and_ids(dataset) -> tuple[Catalog, ApiIds]:
    return Catalog.from_dataset(dataset), ApiIds(dataset.ids)


def _counters(catalog: Catalog, config: RayfeedConfig) -> EngagementCounters:
    return EngagementCounters.from_catalog(catalog, config.retrieval.dynamic.engagement_types,
                                           config.api.counter_retention_days)


@dataclass(frozen=True)
class IngressState:
    config: RayfeedConfig
    version: str
    clock: ReplayClock
    collator: Collator
    admin_token: str | None
    producer_token: str | None  # POST /v1/items
    hook: ObservabilityHook  # the ingress's own steps (feed-state read, chain wait, collation)
    catalog: Loaded[tuple[Catalog, ApiIds]]  # the artifact's catalogue and the dataset's own ids
    items: tuple[Catalog, ApiIds]  # the same with the published items (what requests and events name)
    counters: EngagementCounters  # real-time counters moved atomically with the event append


@serve.deployment(name="FeedIngress")
@serve.ingress(app)
class FeedIngress(ReloadableDeployment[IngressState]):
    stage_name = "ingress"
    follows_items = True  # published items' ids, in requests, events and pages

    def __init__(self, retrieval: DeploymentHandle, ranking: DeploymentHandle, reranking: DeploymentHandle,
                 auction: DeploymentHandle, monitor: DeploymentHandle | None = None) -> None:
        super().__init__()
        self.monitor = monitor  # the live monitor: bound here so Serve deploys it; never on the request path
        settings = DeploymentSettings()
        self.redis = GuardedRedis(lambda: observability(self.config) if self.config else None)
        self.stages = StageClient(retrieval, ranking, reranking, auction,
                                  lambda: self._state.hook if self._state else None,
                                  settings.chain_max_in_flight, settings.chain_max_batch_size)
        self.rate_limit = RateLimitShare()
        self.admission = Admission(lambda n: observability(self.config).set_admission_limit(n),
                                   lambda: observability(self.config).record_shed("feed", "overloaded"),
                                   lambda held_s: observability(self.config).record_request(503, held_s))
        self.takedowns, self._takedown_task = TakedownFollower(), None  # checked again at page assembly

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings,
                    previous: IngressState | None) -> IngressState:
        version = resolve_version(config)
        a = config.api
        catalog = load_once(previous.catalog if previous else None, (config.data, version.path),
                            lambda: _catalog_and_ids(load_dataset_for(config.data, version.path)))
        return IngressState(config, version.version, serving_clock(version), Collator(config.collator),
                            load_admin_token(os.environ, a.admin_token_env, a.admin_token_file),
                            load_admin_token(os.environ, a.producer_token_env, a.producer_token_file),
                            stage_hook("ingress", config, version.version), catalog, catalog.value,
                            _counters(catalog.value[0], config))

    def with_published(self, state: IngressState, published: PublishedItems) -> IngressState:
        catalog, ids = state.catalog.value
        placed = published.place(ItemBase.of(catalog.known, catalog.creator_id, ids.ids))
        items = catalog.with_items(placed)
        return dataclasses.replace(state, items=(items, ids.with_published(placed)),
                                   counters=_counters(items, state.config))

    def after_swap(self, state: IngressState, settings: DeploymentSettings) -> None:
        config = state.config
        self.redis.configure(config.redis_url, config.api)
        self.stages.configure(settings.chain_max_in_flight, settings.chain_max_batch_size, config.api.release_linger_s)
        self.rate_limit.configure(config.api)
        self.admission.configure(config.api)
        http.document_api(app, config.api, state.items[1].kind, state.catalog.value[0].topics)
        if config.redis_url:
            self.rate_limit.start(lambda: self.redis.client, self.redis.guarded, self.redis.down)
        if self._takedown_task is None:
            self._takedown_task = asyncio.get_running_loop().create_task(follow_takedowns(
                config.redis_url, self.takedowns, lambda: self.config.api.takedown_poll_s, "ingress"))

    async def __del__(self) -> None:  # Serve's graceful shutdown: releases still waiting go now
        await self.stages.send_releases_now()

    def _check_rate(self, request: Request, state: IngressState, route: str) -> None:
        self.rate_limit.check(request.client.host if request.client else "unknown",
                              lambda: observability(state.config).record_shed(route, "rate_limited"))

    # -- feed ----------------------------------------------------------------------------------
    @app.get("/v1/feed", response_model=FeedResponse, response_model_exclude_none=True,
             responses=http.FEED_RESPONSES)
    async def feed(
        self, request: Request,
        user_id: str = Query(..., min_length=1, max_length=128, description="the user, in the dataset's own ids"),
        limit: int | None = Query(None, description="items on this page (bounds: api.min_limit..api.max_limit)"),
        cursor: str | None = Query(None, min_length=1, max_length=CursorCodec.MAX_LENGTH),
        explain: bool = Query(False, description="add per-item provenance and removal counts"),
    ) -> JSONResponse:
        started = time.perf_counter()
        async with self.admission.admitted():  # first: a refused feed costs no state, span or Redis
            state = await self.state()
            config, metrics = state.config, observability(state.config)
            request_id, ids = uuid.uuid4().hex, state.items[1]
            try:
                self._check_rate(request, state, "feed")
                internal = ids.user(external := ids.parse_query(user_id, "user_id"))
                deadline = http.request_deadline(request.headers, config.api.request_timeout_s, time.time())
                limit = config.api.default_limit if limit is None else limit
                if not config.api.min_limit <= limit <= config.api.max_limit:
                    raise ApiError(422, "limit", f"must be between {config.api.min_limit} and {config.api.max_limit}")
                with request_span("GET /v1/feed", request.headers, user_id=external, request_id=request_id,
                                  salt=config.observability.user_id_hash_salt) as span:
                    body = await self._feed(state, internal, external, limit, cursor, explain, request_id, started,
                                            deadline)
                    span.set_attribute(ATTR_MODEL_VERSION, body["model_version"])
                    span.set_attribute(ATTR_N_OUT, len(body["items"]))
            except ApiError as exc:
                metrics.record_request(exc.status, time.perf_counter() - started)
                raise
            except http.STAGE_FAILURES as exc:
                error, shed_reason = http.stage_failure(exc)
                metrics.record_request(error.status, time.perf_counter() - started)
                metrics.record_shed("feed", shed_reason)
                raise error from None
            metrics.record_request(200, time.perf_counter() - started)
            return JSONResponse(body)

    async def _feed(self, state: IngressState, user_id: int, external: object, limit: int, cursor_token: str | None,
                    explain: bool, request_id: str, started: float, deadline: float) -> dict[str, Any]:
        config, now = state.config, state.clock()
        t = time.perf_counter()
        page_state = await self.redis.read_page_state(user_id, cursor_token, uuid.uuid4().hex, state.hook)
        timings = {"state": ms_since(t)}
        check_deadline(deadline, "ingress")  # e.g. the feed-state read was slow
        carrier = inject_context()
        request = OrganicRequest(user_id, now, limit, request_id, page_state.served_item_ids,
                                 page_state.hidden_item_ids, page_state.hidden_creator_ids, explain, carrier, deadline,
                                 external)
        t = time.perf_counter()
        ads_call = None
        if page_state.store_ok:  # without Redis no cap or budget can be checked: no auction
            ads_call = self.stages.start_ads(AdsRequest(
                user_id, request_id, config.collator.ad_slots(limit), now, page_state.session_id,
                page_state.hidden_creator_ids, carrier, deadline))
        try:
            organic = await self.stages.organic(request)
        except BaseException:
            if ads_call is not None:
                ads_call.cancel()  # its reservations, if any were made, expire by TTL
            raise
        ads, ads_seconds = await self.stages.ads_by(ads_call, deadline)
        timings["organic_and_ads_wall"] = ms_since(t)
        if ads_seconds is not None:
            timings["ads"] = round(ads_seconds * 1000, 3)
        t = time.perf_counter()
        page = assemble_page(request, organic, ads, page_state.with_takedowns(self.takedowns.current), state.collator,
                             config.api.max_pages, state.version, state.hook, timings, state.items[1])
        page.body["timings_ms"]["collate"] = ms_since(t)
        if page.unplaced_ads:
            self.stages.release(request_id, [a.ad_id for a in page.unplaced_ads])
        log_entry = prediction_log_entry(config.observability, user_id, request_id, page.collated.slots,
                                         page_state.first_position, organic, state.version)
        page.body["cursor"] = await self.redis.record_page(
            user_id, page_state, page.organic_item_ids, page.n_ads,
            page_state.first_position + len(page.collated.slots), page.has_more, log_entry)
        if explain:
            page.body["explain"]["live_topics"] = await self.redis.live_topics(user_id)
        page.body["timings_ms"]["total"] = ms_since(started)
        try:
            observability(config).record_page([s.kind for s in page.collated.slots],
                                              [s.item.creator_id for s in page.collated.slots if s.kind == "organic"])
        except Exception:  # noqa: BLE001 - metrics never fail a request
            log.exception("page metrics failed")
        return page.body

    # -- events --------------------------------------------------------------------------------
    @app.post("/v1/events", response_model=EventsAck, status_code=200, responses=http.EVENTS_RESPONSES,
              openapi_extra=http.json_body(EventBatch, "a batch of events (at most api.max_events_per_request)"))
    async def events(self, request: Request) -> EventsAck:
        started = time.perf_counter()
        state = await self.state()
        config, metrics = state.config, observability(state.config)
        self._check_rate(request, state, "events")
        given = parse_events(await http.read_body_capped(request, config.api.max_body_bytes),
                             config.api.max_events_per_request)
        events, ids = with_internal_ids(given, state.items[1]), state.items[1]
        store = self.redis.store()
        if store is None:
            raise ApiError(503, None, "no event store configured (REDIS_URL)", {"Retry-After": "1"})
        now = state.clock()
        refs = [g.user_id if ids.ids is not None else None for g in given]  # new users' own ids
        stream_events = stream_events_of(events, refs, now, config.api.max_event_age_s)
        stream = EventStream(store.client, config.api.event_stream_maxlen, config.api.event_dedup_ttl_s,
                             partitions=config.api.event_stream_partitions)
        try:  # BEFORE the ack: an acknowledged event is never lost
            flags = await self.redis.guarded(
                "events_append", lambda: stream.append(stream_events, state.counters.ops_for(stream_events)))
        except StoreUnavailable as exc:
            self.redis.down("events_append", exc)
            metrics.record_request(503, time.perf_counter() - started, route="events")
            raise ApiError(503, None, "event stream unavailable; retry the batch (it is de-duplicated)",
                           {"Retry-After": "1"}) from None
        accepted = [e for e, new in zip(stream_events, flags) if new]
        try:
            await self.redis.guarded("events_apply", lambda: store.apply_events(accepted))
        except StoreUnavailable as exc:  # on the stream already: consumers can rebuild the counters
            self.redis.down("events_apply", exc)
        impressions = ad_impressions(accepted)
        if impressions:
            try:
                await self.stages.commit_impressions(impressions)
            except StoreUnavailable as exc:
                self.redis.down("ads_commit", exc)
            except Exception as exc:  # noqa: BLE001 - the stream holds them; reservations expire
                log.warning("committing %d ad impressions failed: %s", len(impressions), exc)
        for kind, n in counts_by_type(accepted).items():
            metrics.record_event(kind, n)
        metrics.record_request(200, time.perf_counter() - started, route="events")
        return EventsAck(accepted=len(accepted), duplicates=len(events) - len(accepted))

    # -- health --------------------------------------------------------------------------------
    @app.get("/healthz")
    async def healthz(self) -> dict[str, str]:
        return {"status": "alive"}

    @app.get("/readyz", response_model=ReadyResponse, responses=http.READY_RESPONSES)
    async def readyz(self) -> JSONResponse:
        return await readiness(self._state, self.stages, self.redis, self.items_ready())

    # -- admin (deployments/admin.py) and producers (deployments/publishing.py) -----------------
    @app.post("/v1/items", response_model=PublishAck, responses=http.PUBLISH_RESPONSES, openapi_extra={
        **http.json_body(PublishRequest, "items to publish (at most api.max_publish_items)"),
        "security": http.PRODUCER_SECURITY})
    async def publish_items(self, request: Request) -> dict[str, Any]:
        return await publishing.publish(request, await self.state(), self.redis)
    @app.delete("/v1/items/{item_id}", response_model=DeletedItem, responses=http.DELETE_RESPONSES,
                openapi_extra={"security": http.PRODUCER_SECURITY})
    async def delete_item(self, request: Request, item_id: str) -> dict[str, Any]:
        return await publishing.delete(request, await self.state(), self.redis, item_id)

    async def _admin(self, request: Request, model):
        state = await self.state()
        return state, await admin.authorised_body(request, state.admin_token, model)

    @app.post("/admin/reload", responses={**http.ADMIN_RESPONSES, **http.NOT_FOUND}, openapi_extra={
        **http.json_body(ReloadRequest, "the version to serve; no body follows LATEST", required=False),
        "security": http.ADMIN_SECURITY})
    async def admin_reload(self, request: Request) -> dict[str, Any]:
        state, body = await self._admin(request, ReloadRequest)
        admin.check_version(state.config.artifacts, body.version)
        return await admin.write_overrides(self.redis, self._settings.rayfeed, {"artifacts": {"version": body.version}},
                                           self._settings.admin_poll_s)

    @app.post("/admin/weights", responses=http.ADMIN_RESPONSES, openapi_extra={
        **http.json_body(WeightsRequest, "the weights to change"), "security": http.ADMIN_SECURITY})
    async def admin_weights(self, request: Request) -> dict[str, Any]:
        _, body = await self._admin(request, WeightsRequest)
        change: dict[str, Any] = {}  # the model refuses a body that changes nothing
        collator = {k: v for k, v in body.model_dump(include={"alpha", "beta", "gamma"}).items() if v is not None}
        if collator:
            change["collator"] = collator
        if body.ranking is not None:
            change["ranking"] = {"weights": {k: v for k, v in body.ranking.model_dump().items() if v is not None}}
        return await admin.write_overrides(self.redis, self._settings.rayfeed, change, self._settings.admin_poll_s)

    @app.post("/admin/{kind}s/{ref}/takedown", responses={**http.ADMIN_RESPONSES, **http.NOT_FOUND}, openapi_extra={
        **http.json_body(TakedownRequest, "why it is taken down"), "security": http.ADMIN_SECURITY})
    async def admin_takedown(self, request: Request, kind: TakedownKind, ref: str) -> dict[str, Any]:
        state, body = await self._admin(request, TakedownRequest)
        return await admin.take_down(self.redis, *state.items, kind, ref, body.reason, state.config.api.takedown_poll_s)

    @app.post("/admin/{kind}s/{ref}/restore", responses={**http.ADMIN_RESPONSES, **http.NOT_FOUND},
              openapi_extra={"security": http.ADMIN_SECURITY})
    async def admin_restore(self, request: Request, kind: TakedownKind, ref: str) -> dict[str, Any]:
        state, _ = await self._admin(request, NoBody)
        return await admin.restore(self.redis, state.items[1], kind, ref, state.config.api.takedown_poll_s)
