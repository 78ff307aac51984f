"""What every deployment shares: typed user_config, artifact resolution, the serving clock,
tracing/metrics set-up and hot reload (`ReloadableDeployment`).

user_config (serve_config.yaml, per deployment) is validated by `DeploymentSettings`:

    user_config:
      rayfeed: {artifacts: {root: artifacts, version: null}, collator: {alpha: 1.0}, ...}  # RayfeedConfig
      max_batch_size: 16          # Ranking only: @serve.batch
      batch_wait_timeout_s: 0.0     # Ranking: 0 = batch what is queued when the model is free
      admin_poll_s: 1.0           # how often a replica looks for /admin overrides in Redis
      heap_trim_s: 30.0           # how often a replica hands its freed C heap back to the OS (0: never)
      chain_max_in_flight: 2      # FeedIngress only: stage calls outstanding (deployments/batching.py)
      chain_max_batch_size: 8     # FeedIngress only: requests carried by one stage call

Hot reload, two ways, one mechanism: Serve calls `reconfigure(user_config)` when the YAML's
user_config changes (`serve deploy`), and every replica polls Redis for the overrides that
`/admin/reload` and `/admin/weights` write (a handle call reaches one replica, a Redis key
reaches all of them). Either way the new state (models, runners, weights) is built BESIDE the
old one in a worker thread and then swapped in with one reference assignment: requests in
flight finish on the state they started with, none waits for the load, none fails.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from app.artifacts import ArtifactVersion
from app.artifacts import resolve_version as resolve_artifact_version
from app.freshness.published import PublishedItems
from app.shared_arrays import release_freed_heap, release_unused_memory
from app.state.clock import ReplayClock
from app.state.overrides import AdminOverrides
from config import RayfeedConfig, config_from_mapping, deep_merge

log = logging.getLogger("rayfeed.serve")

# Outside Ray's own CPU accounting, libraries must not start a thread per core each.
os.environ.setdefault("OMP_NUM_THREADS", "1")


class DeploymentSettings(BaseModel):
    """One deployment's user_config. Unknown keys are errors (a typo must not be ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rayfeed: dict[str, Any] = Field(default_factory=dict, description="RayfeedConfig sections (validated there)")
    max_batch_size: int = Field(16, ge=1, le=1024, description="Ranking: requests per @serve.batch call")
    batch_wait_timeout_s: float = Field(
        0.0, ge=0, le=1,
        description="Ranking: extra wait for a batch to fill; 0 takes what queued while the last batch ran")
    admin_poll_s: float = Field(1.0, gt=0, le=3600, description="period of the admin-override poll (Redis)")
    heap_trim_s: float = Field(
        30.0, ge=0, le=3600,
        description="period of handing the freed C heap back to the OS (malloc_trim; 0: never): requests' "
                    "freed temporaries otherwise stay with the replica (≈ 0.2 GiB a 1M-item Ranking replica)")
    # Ingress only: adaptive batching of the stage calls (deployments/batching.py). A request that
    # finds fewer than chain_max_in_flight calls out goes at once; the others wait and share the next.
    chain_max_in_flight: int = Field(
        2, ge=1, le=256, description="Ingress: organic chains (and auction calls) outstanding at once")
    chain_max_batch_size: int = Field(8, ge=1, le=256, description="Ingress: requests per stage call")


def resolve_version(config: RayfeedConfig) -> ArtifactVersion:
    return resolve_artifact_version(config.artifacts)


Value = TypeVar("Value")


@dataclass(frozen=True)
class Loaded(Generic[Value]):
    """Something a replica loaded (an artifact, a catalogue) and what it was loaded for."""

    key: object
    value: Value


def load_once(previous: Loaded[Value] | None, key: object, load: Callable[[], Value]) -> Loaded[Value]:
    """`previous` when it was loaded for the same `key` (artifact root and version, and the
    config sections the load depends on), else a fresh `load()`: a reconfigure that changes only
    tunables reuses what is loaded instead of reading it again."""
    if previous is not None and previous.key == key:
        return previous
    return Loaded(key, load())


def serving_clock(version: ArtifactVersion) -> ReplayClock:
    """World time shared by every replica and restart: the artifact's `as_of` plus the wall
    time elapsed since the version was published (its manifest's mtime)."""
    manifest = version.manifest()
    clock = ReplayClock(anchor=float(manifest["as_of"]))
    clock.started = version.published_at()
    return clock


_observability_lock = threading.Lock()
_metrics = None


def observability(config: RayfeedConfig):
    """This process's tracer provider (once) and metrics recorder."""
    global _metrics
    from observability.metrics import RayMetrics
    from observability.tracing import setup_tracing

    setup_tracing(config.observability)
    with _observability_lock:
        if _metrics is None:
            _metrics = RayMetrics.from_config(config.observability)
    return _metrics


def stage_hook(pipeline: str, config: RayfeedConfig, version: str):
    """The StageHook of one pipeline in this replica: spans and stage metrics, tagged with the
    artifact version it serves."""
    from observability.metrics import ObservabilityHook

    return ObservabilityHook(pipeline, observability(config), model_version=version,
                             batch_span_mode=config.observability.batch_span_mode)


async def follow_takedowns(url: str | None, follower, poll_s: Callable[[], float], stage: str) -> None:
    """Keep `follower` (app.state.takedowns.TakedownFollower) current: one GET per poll, a reload
    when the version moved; while Redis is unreachable the set it holds stays applied."""
    from app.state._redis import async_fail_fast_client
    from app.state.errors import StoreUnavailable
    from app.state.takedowns import TakedownSet, TakedownStore

    if not url:
        follower.current = TakedownSet(version=0)  # no store: nothing can be taken down
        return
    store, failing = TakedownStore(async_fail_fast_client(url, 0.5, max_connections=2)), False
    while True:
        try:
            await follower.refresh(store)
            failing = False
        except StoreUnavailable as exc:
            if not failing:
                log.warning("%s: takedowns unavailable, keeping the %d items / %d creators held: %s", stage,
                            len(follower.current.items), len(follower.current.creators), exc)
            failing = True
        await asyncio.sleep(poll_s())


async def follow_items(url: str, deployment: ReloadableDeployment, read_count: int, block_ms: int, stage: str) -> None:
    """Replay the item stream from the start, then follow it (XREAD BLOCK), applying each batch
    to `deployment` (`apply_published`). While Redis is unreachable the items held stay served."""
    from app.state._redis import async_fail_fast_client
    from app.state.items import ItemStreamStore

    store, failing = ItemStreamStore(async_fail_fast_client(url, block_ms / 1000 + 2.0, max_connections=1)), False
    while True:
        try:
            entries = await store.read_after(deployment.published.position, read_count, block_ms)
            deployment.apply_published(entries, caught_up=len(entries) < read_count)
            failing = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - Redis trouble: keep serving what is held, retry
            if not failing:
                log.warning("%s: item stream follow failed, serving the %d published items held: %s", stage,
                            len(deployment.published), exc)
            failing = True
            await asyncio.sleep(1.0)


State = TypeVar("State")


class ReloadableDeployment(Generic[State]):
    """Base of the deployments: holds one immutable `State`, rebuilt on reconfigure/overrides."""

    stage_name = "stage"
    follows_items = False  # holds item data: follows the item stream (app/state/items.py)

    def __init__(self) -> None:
        self.published = PublishedItems()  # the item stream as this replica has followed it
        self._item_follower: asyncio.Task | None = None
        self._state: State | None = None
        self._settings = DeploymentSettings()
        self._overrides: dict[str, Any] = {}
        self._generation = 0  # no overrides written yet (a missing key reads as generation 0)
        self._rebuild_lock: asyncio.Lock | None = None
        self._poller: asyncio.Task | None = None
        self._heap_trimmer: asyncio.Task | None = None
        self.config: RayfeedConfig | None = None
        self.last_reload_error: str | None = None  # why the last reconfigure kept the old state

    # -- to implement ----------------------------------------------------------------------------
    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: State | None) -> State:
        """Build the full serving state for `config` (may reuse `previous`'s loaded artifacts)."""
        raise NotImplementedError

    def after_swap(self, state: State, settings: DeploymentSettings) -> None:
        """Cheap, loop-side adjustments after a swap (e.g. @serve.batch sizes)."""

    def with_published(self, state: State, published: PublishedItems) -> State:
        """`state` knowing the published items (deployments that hold item data)."""
        return state

    def apply_published(self, entries, caught_up: bool) -> None:
        """Take a batch of the item stream: the held view, then the state rebuilt around it (on
        the event loop: requests see the old state or the new one, never a mix). The view moves
        on only with the state: a batch that fails to apply is read again, never skipped."""
        published = self.published.apply(entries, caught_up)
        if entries and self._state is not None:
            started = time.perf_counter()
            self._state = self.with_published(self._state, published)
            log.info("%s: %d published items applied (%d held) in %.1f ms", self.stage_name, len(entries),
                     len(published), (time.perf_counter() - started) * 1000)
        self.published = published

    async def _catch_up_items(self, timeout_s: float = 30.0) -> None:
        """Replay the item stream to its end before the first request (a new or restarted
        replica serves every published item from its first page). Without Redis: log, go on,
        and let the follower catch up when Redis answers."""
        from app.state._redis import async_fail_fast_client
        from app.state.items import ItemStreamStore

        if not (self.config and self.config.redis_url):
            return
        api, started = self.config.api, time.monotonic()
        store = ItemStreamStore(async_fail_fast_client(self.config.redis_url, 2.0, max_connections=1))
        try:
            while not self.published.caught_up and time.monotonic() - started < timeout_s:
                entries = await store.read_after(self.published.position, api.item_read_count, None)
                self.apply_published(entries, caught_up=len(entries) < api.item_read_count)
        except Exception as exc:  # noqa: BLE001 - the follower retries
            log.warning("%s: item stream replay failed (%s); following it when Redis answers", self.stage_name, exc)
        finally:
            await store.client.aclose()

    def items_ready(self) -> bool:
        """Whether the item stream has been read to its end once (always, without Redis)."""
        return not self.follows_items or self.published.caught_up or not (self.config and self.config.redis_url)

    # -- Serve hooks ---------------------------------------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any] | None) -> None:
        """Start-up: a failure raises (Serve reports it and the deployment does not start).
        Serving: a new state that cannot be built (an unreachable artifact URI, a version missing
        from it, a bad value) leaves the old one serving, logs the error once, and keeps it for
        `reload_error` until a later reconfigure succeeds."""
        previous = self._settings
        self._settings = DeploymentSettings.model_validate(user_config or {})
        try:
            await self._rebuild()
            self.last_reload_error = None
        except Exception as exc:
            if self._state is None:
                raise
            self._settings = previous
            self.last_reload_error = f"{type(exc).__name__}: {exc}"
            log.error("%s: reconfigure failed, still serving %s: %s", self.stage_name,
                      getattr(self._state, "version", "the previous state"), self.last_reload_error)
        if self.follows_items and not self.published.caught_up:
            await self._catch_up_items()  # Serve routes to a replica only once this returns
        self._start_poller()

    async def state(self) -> State:
        if self._state is None:  # deployed without a user_config
            await self.reconfigure({})
        return self._state  # type: ignore[return-value]

    async def reload_error(self) -> str | None:
        """Why the last reconfigure left the old state serving; None when it succeeded."""
        return self.last_reload_error

    async def loaded_version(self) -> str:
        """The artifact version this replica serves (readiness checks, tests); raises while the
        item stream is not caught up."""
        state = await self.state()
        if not self.items_ready():
            from deployments.messages import ItemStreamBehind
            raise ItemStreamBehind(self.stage_name)
        return state.version  # type: ignore[attr-defined]

    # -- internals -----------------------------------------------------------------------------
    async def _rebuild(self) -> None:
        if self._rebuild_lock is None:
            self._rebuild_lock = asyncio.Lock()
        async with self._rebuild_lock:
            mapping = deep_merge(self._settings.rayfeed, self._overrides)
            config = config_from_mapping(mapping, f"{self.stage_name} user_config")
            started = time.perf_counter()
            # Built in a worker thread, beside the old state: requests keep being served meanwhile.
            state = await asyncio.to_thread(self._build_and_release, config, self._settings, self._state)
            if self.follows_items and len(self.published):
                state = self.with_published(state, self.published)
            self.config, self._state = config, state  # the swap
            self.after_swap(state, self._settings)
            # The loaded state (millions of objects at 1M items) leaves the cyclic collector's
            # view: a full collection walking it paused a request ≈ 0.2 s (benchmarks/live_apply.py).
            release_unused_memory()  # what loading freed goes back to the OS, not to the next load
            gc.freeze()
            log.info("%s: state ready in %.2fs", self.stage_name, time.perf_counter() - started)
            if self._heap_trimmer is None:
                self._heap_trimmer = asyncio.get_running_loop().create_task(self._trim_heap())

    def _build_and_release(self, config: RayfeedConfig, settings: DeploymentSettings, previous: State | None) -> State:
        state = self.build_state(config, settings, previous)
        # In the thread that loaded: Arrow's allocator (mimalloc) hands a thread's freed pages back
        # only from that thread. Released from the event loop alone, a 1M-item Retrieval replica
        # kept ≈ 270 MiB of freed parquet buffers (measured: 559 against 302 MiB anonymous).
        release_unused_memory()
        return state

    async def _trim_heap(self) -> None:
        """Every `heap_trim_s`, the C heap that requests freed goes back to the OS (≈ 20 ms in a
        worker thread at 1M items; app/shared_arrays.py `release_freed_heap`)."""
        while True:
            period = self._settings.heap_trim_s
            await asyncio.sleep(period or 60.0)  # 0: never trims, looks again in a minute
            if period:
                await asyncio.to_thread(release_freed_heap)

    def _start_poller(self) -> None:
        if not (self.config and self.config.redis_url):
            return
        if self.follows_items and self._item_follower is None:
            items = self.config.api
            self._item_follower = asyncio.get_running_loop().create_task(follow_items(
                self.config.redis_url, self, items.item_read_count, items.item_read_block_ms, self.stage_name))
        if self._poller is not None:
            return
        self._poller = asyncio.get_running_loop().create_task(self._poll_overrides(self.config.redis_url))

    async def _poll_overrides(self, url: str) -> None:
        from app.state._redis import async_fail_fast_client

        overrides = AdminOverrides(async_fail_fast_client(url, 0.5, max_connections=2))
        while True:
            try:
                found = await overrides.read()  # a deleted key resets to generation 0
                if found.generation != self._generation:
                    self._generation = found.generation  # tried once: a bad override is not retried forever
                    previous, self._overrides = self._overrides, dict(found.overrides)
                    try:
                        await self._rebuild()
                        log.info("%s: applied admin overrides generation %d", self.stage_name, found.generation)
                    except Exception:
                        self._overrides = previous
                        raise
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a bad override or a Redis blip must not kill the poller
                log.warning("%s: admin override poll failed: %s", self.stage_name, exc)
            await asyncio.sleep(self._settings.admin_poll_s)
