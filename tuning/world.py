"""The simulated world: users' latent interests, items, creators, ads, and each user's pool of
organic candidates produced by the real pipeline.

Grounding (MovieLens-100k through the published artifacts):
  * a user's latent interest u is their two-tower user embedding; an item's latent v its
    two-tower item embedding (both L2-normalised), so true affinity is the model's cosine;
  * topics (genres) and creators (directors) are the catalogue's; popularity is the number of
    ML-100k interactions;
  * a user's organic pool is `OrganicPipeline.run(query)` — retrieval, the multi-task DCN,
    MMR and the creator cap — run once per user, as of the artifacts' time, with the pool size
    of `SystemConfig` (the budget approximation: the pipeline costs ~0.25 s per user on this
    machine, so it is not rerun per session; the system adapts daily through the dynamic
    embedding term instead, see `simulator`). Pools are cached under data_cache/tuning/.
  * ads come from the real AdServer (targeting, pCTR·pCVR models, GSP auction, pacing) over
    in-memory cap and budget stores.

`toy_world` builds the same structure from random latents for fast tests.
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.ads.bundle import AdsBundle
from app.ads.types import AdUser

EmbedUsers = Callable[[np.ndarray, Sequence[Sequence[int]]], np.ndarray]


@dataclass(frozen=True)
class Pool:
    """One user's reranked organic candidates in pipeline order (item ids, final score, P(click))."""

    item_ids: np.ndarray
    final: np.ndarray
    p_click: np.ndarray


@dataclass
class SimWorld:
    """Everything a simulation reads; immutable during a run (state lives in the simulator)."""

    user_ids: np.ndarray  # (n,) simulated users
    user_latent: np.ndarray  # (n, d) unit vectors, row i for user_ids[i]
    item_latent: np.ndarray  # (max_item_id + 1, d), row = item id (row 0 unused)
    item_topics: np.ndarray  # (max_item_id + 1, n_topics) multi-hot
    item_creator: np.ndarray  # (max_item_id + 1,) creator id, −1 unknown
    item_popularity: np.ndarray  # (max_item_id + 1,) interactions in the real log
    topics: tuple[str, ...]
    pools: dict[int, Pool]
    ads: AdsBundle | None
    ad_users: dict[int, AdUser]
    start_time: float  # simulated day 0 begins here (a UTC midnight)
    user_history: dict[int, list[int]]  # real consumed items, newest first (the dynamic embedding's input)
    embed_users: EmbedUsers | None = None  # the system's user tower: (ids, newest-first histories) → vectors
    name: str = "world"

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def topic_profile(self, latent: np.ndarray) -> np.ndarray:
        """A user's interest over topics: softmax of cosine to each topic's centroid (temperature 0.1)."""
        centroids = self._topic_centroids()
        logits = latent @ centroids.T / 0.1
        logits -= logits.max(axis=-1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=-1, keepdims=True)

    def _topic_centroids(self) -> np.ndarray:
        cached = getattr(self, "_centroids", None)
        if cached is None:
            weights = self.item_topics / np.maximum(self.item_topics.sum(axis=0, keepdims=True), 1)
            c = weights.T @ self.item_latent
            cached = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-9)
            self._centroids = cached
        return cached


def _day_start(ts: float) -> float:
    return float(np.floor(ts / 86_400.0) * 86_400.0)


def world_from_artifacts(
    loaded, config, sim_config, n_users: int | None = None, cache_dir: str | Path = "data_cache/tuning",
    log: Callable[[str], None] = print,
) -> SimWorld:
    """The MovieLens world of a published artifact version (`app.bootstrap.load_artifacts`)."""
    from config import config_from_mapping
    from app.organic import OrganicPipeline

    system = sim_config.system
    n_users = n_users or sim_config.n_users
    models, dataset = loaded.organic, loaded.dataset
    user_ids = np.sort(dataset.users["user_id"].to_numpy(np.int64))[:n_users]
    tt = models.two_tower
    rows = {int(u): r for r, u in enumerate(tt.user_ids)}
    user_latent = np.stack([tt.user_embeddings[rows[int(u)]] for u in user_ids]).astype(np.float64)
    max_item = dataset.max_item_id
    item_latent = np.zeros((max_item + 1, tt.dim))
    item_latent[tt.item_ids] = tt.item_embeddings
    counts = np.bincount(dataset.interactions["item_id"].to_numpy(np.int64), minlength=max_item + 1)
    as_of = float(models.meta.get("as_of", models.engagements.last_timestamp))

    key = hashlib.sha1(json.dumps([loaded.version.version, n_users, system.pool_size, system.ranking_size]).encode()).hexdigest()[:12]
    cache = Path(cache_dir) / f"pools-{key}.npz"
    if cache.exists():
        arrays = np.load(cache)
        pools = {int(u): Pool(arrays[f"i{u}"], arrays[f"f{u}"], arrays[f"p{u}"]) for u in user_ids}
    else:
        pool_config = config_from_mapping(
            {**config.model_dump(mode="python", exclude={"redis_url"}),
             "ranking": {**config.ranking.model_dump(mode="python"), "output_size": system.ranking_size},
             "reranking": {**config.reranking.model_dump(mode="python"), "output_size": system.pool_size}},
            "<simulator pool config>",
        )
        pipeline = OrganicPipeline(models, pool_config)
        pools = {}
        started = time.perf_counter()
        for k, u in enumerate(user_ids):
            c = pipeline.run(models.query(int(u), now=as_of, limit=system.pool_size)).candidates
            pools[int(u)] = Pool(c.item_ids.astype(np.int64), c.scores["final"].astype(np.float64),
                                 c.scores["p_click"].astype(np.float64))
            if (k + 1) % 50 == 0 or k + 1 == len(user_ids):
                log(f"  pools from the real pipeline: {k + 1}/{len(user_ids)} users ({time.perf_counter() - started:.0f}s)")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{f"{p}{u}": getattr(pools[u], a) for u in pools for p, a in
                           (("i", "item_ids"), ("f", "final"), ("p", "p_click"))})

    history = {int(u): models.engagements.user_items(int(u)).tolist()[::-1] for u in user_ids}

    def embed(ids: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
        users = dataset.users.set_index("user_id").loc[ids].reset_index()
        return tt.encode_users(users, histories)

    return SimWorld(
        user_ids=user_ids,
        user_latent=user_latent,
        item_latent=item_latent,
        item_topics=dataset.item_topic_matrix.astype(np.float64),
        item_creator=dataset.item_creator.astype(np.int64),
        item_popularity=counts.astype(np.float64),
        topics=tuple(dataset.topics),
        pools=pools,
        ads=loaded.ads,
        ad_users=dict(loaded.ads.users),
        start_time=_day_start(as_of) + 86_400.0,
        user_history=history,
        embed_users=embed,
        name=f"{dataset.name} @ {loaded.version.version}",
    )


def toy_world(
    n_users: int = 30, n_items: int = 400, n_topics: int = 6, n_creators: int = 40, dim: int = 8,
    pool_size: int = 120, seed: int = 0, ads: AdsBundle | None = None,
) -> SimWorld:
    """A small random world with the same structure (tests): latents clustered by topic, pools =
    each user's items sorted by a noisy affinity (a stand-in ranker), popularity log-normal."""
    rng = np.random.default_rng(seed)
    topic_vec = rng.normal(size=(n_topics, dim))
    topic_vec /= np.linalg.norm(topic_vec, axis=1, keepdims=True)
    item_topic = rng.integers(0, n_topics, size=n_items + 1)
    item_latent = topic_vec[item_topic] + 0.6 * rng.normal(size=(n_items + 1, dim)) / np.sqrt(dim)
    item_latent /= np.linalg.norm(item_latent, axis=1, keepdims=True)
    item_latent[0] = 0
    topics = np.zeros((n_items + 1, n_topics))
    topics[np.arange(n_items + 1), item_topic] = 1
    topics[0] = 0
    user_topic = rng.integers(0, n_topics, size=n_users)
    user_latent = topic_vec[user_topic] + 0.5 * rng.normal(size=(n_users, dim)) / np.sqrt(dim)
    user_latent /= np.linalg.norm(user_latent, axis=1, keepdims=True)
    popularity = rng.lognormal(2.0, 1.2, size=n_items + 1)
    popularity[0] = 0
    user_ids = np.arange(1, n_users + 1, dtype=np.int64)
    pools = {}
    for r, u in enumerate(user_ids):
        score = item_latent[1:] @ user_latent[r] + 0.2 * np.log1p(popularity[1:]) / 5 + 0.15 * rng.normal(size=n_items)
        order = np.argsort(-score)[:pool_size]
        final = 1 / (1 + np.exp(-3 * score[order]))
        pools[int(u)] = Pool(order.astype(np.int64) + 1, final, np.clip(final * 0.8, 0, 1))
    ad_users = dict(ads.users) if ads is not None else {}
    if ads is not None and len(ad_users) < n_users:
        raise ValueError("the ads bundle has fewer users than the toy world")
    return SimWorld(
        user_ids=user_ids,
        user_latent=user_latent,
        item_latent=item_latent,
        item_topics=topics,
        item_creator=np.concatenate([[-1], rng.integers(1, n_creators + 1, size=n_items)]).astype(np.int64),
        item_popularity=popularity,
        topics=tuple(f"topic_{t}" for t in range(n_topics)),
        pools=pools,
        ads=ads,
        ad_users=ad_users,
        start_time=1_700_006_400.0,
        user_history={int(u): [] for u in user_ids},
        embed_users=None,
        name=f"toy-{n_users}u-{n_items}i",
    )


def item_frame(world: SimWorld) -> pd.DataFrame:
    """Items with creator and popularity (reports)."""
    ids = np.flatnonzero(world.item_creator >= 0)
    return pd.DataFrame({"item_id": ids, "creator_id": world.item_creator[ids], "popularity": world.item_popularity[ids]})
