"""Assembles the in-process feed service from a published artifact version."""
from __future__ import annotations

from dataclasses import dataclass

import redis

from app.ads.bundle import AdsBundle
from app.ads.pacing import BudgetPacer
from app.ads.server import AdServer
from app.api.ids import ApiIds
from app.artifacts import ArtifactVersion, resolve_version
from app.collator.collator import Collator
from app.data import Dataset, load_dataset_for
from app.feed import FeedService, PageRecorder
from app.organic import OrganicModels, OrganicPipeline
from app.pipeline import StageHook
from app.state._redis import fail_fast_client
from app.state.budgets import RedisBudgetStore
from app.state.caps import RedisCapStore
from app.state.reservations import RedisReservations
from app.settings import FeedSettings
from app.state.clock import Clock, ReplayClock


@dataclass
class LoadedArtifacts:
    version: ArtifactVersion
    dataset: Dataset
    organic: OrganicModels
    ads: AdsBundle


def load_artifacts(config: FeedSettings, dataset: Dataset | None = None) -> LoadedArtifacts:
    version = resolve_version(config.artifacts)
    dataset = dataset or load_dataset_for(config.data, version.path)
    organic = OrganicModels.load(version.path / "organic", dataset, config)
    ads = AdsBundle.load(version.path / "ads")
    return LoadedArtifacts(version, dataset, organic, ads)


def world_clock(loaded: LoadedArtifacts) -> ReplayClock:
    return ReplayClock(anchor=float(loaded.organic.meta.get("as_of", loaded.organic.engagements.last_timestamp)))


def build_ad_server(
    loaded: LoadedArtifacts, config: FeedSettings, client: redis.Redis, clock: Clock, hook: StageHook | None = None
) -> AdServer:
    return ad_server_from_bundle(loaded.ads, config, client, clock, hook)


def ad_server_from_bundle(
    bundle: AdsBundle, config: FeedSettings, client: redis.Redis, clock: Clock, hook: StageHook | None = None
) -> AdServer:
    """The ad server over one ads artifact (the serving layer's Auction loads only that).
    A page's cap and budget steps go to Redis batched (`RedisReservations`)."""
    ads = config.ads
    caps = RedisCapStore(client, ads.session_ttl_s, ads.state_key_grace_s)
    budgets = RedisBudgetStore(client, ads.reservation_ttl_s, ads.state_key_grace_s)
    return AdServer(
        bundle.world,
        bundle.ranker,
        BudgetPacer.from_config(bundle.forecast, ads),
        caps,
        budgets,
        ads,
        clock,
        hook,
        RedisReservations(caps, budgets),
    )


def build_feed_service(
    loaded: LoadedArtifacts, config: FeedSettings, redis_url: str | None, clock: Clock, hook: StageHook | None = None,
    ads_hook: StageHook | None = None,
) -> FeedService:
    """Without a Redis URL there are no ads: caps and budgets cannot be checked (fail closed).
    `hook` observes the organic stages, `ads_hook` the ads funnel."""
    recorder = PageRecorder()
    ad_server = None
    if redis_url:
        client = fail_fast_client(redis_url, config.ads.redis_socket_timeout_s)
        ad_server = build_ad_server(loaded, config, client, clock, recorder.hook(ads_hook))
    version = loaded.version.version
    return FeedService(
        OrganicPipeline(loaded.organic, config, recorder.hook(hook), version),
        Collator(config.collator),
        ad_server,
        dict(loaded.ads.users),
        config.api.max_pages,
        version,
        recorder,
        ids=ApiIds(loaded.dataset.ids),
    )
