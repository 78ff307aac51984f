"""LiveEngagement: what a serving replica learns from the event stream, on a real trained two-tower."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from app.data import DataConfig
from app.data.synthetic import SyntheticWorldSpec, generate_world
from app.freshness.live import LiveEngagement, engagements
from app.retrieval.config import DynamicEmbeddingConfig, TwoTowerConfig
from app.retrieval.engagement import EngagementLog
from app.retrieval.two_tower import TwoTowerArtifacts, train_two_tower_in_process
from app.state.events import StreamEvent

SMALL = dict(embedding_dim=16, id_dim=16, feature_dim=4, hidden_dim=32, history_length=8, batch_size=128, epochs=3)


@pytest.fixture(scope="module")
def world():
    spec = SyntheticWorldSpec(n_users=120, n_items=400, n_creators=30, n_topics=5, interactions_per_user=20, days=20)
    return generate_world(spec, DataConfig(seed=5))


@pytest.fixture(scope="module")
def two_tower(world) -> TwoTowerArtifacts:
    return train_two_tower_in_process(world, world.interactions, TwoTowerConfig(**SMALL, seed=2), on_epoch=None)


@dataclass
class Served:
    """The two things LiveEngagement touches on an OrganicModels."""

    two_tower: TwoTowerArtifacts
    engagements: EngagementLog


def event(user: int, item: int, kind: str = "like", ts: float = 1e9, **extra) -> StreamEvent:
    return StreamEvent(event_id=f"{user}-{item}-{kind}-{ts}", user_id=user, type=kind, ts=ts, item_id=item, **extra)


def test_only_engagements_count():
    config = DynamicEmbeddingConfig(min_watch_seconds=10)
    found = engagements([
        event(1, 5, "like"), event(1, 6, "impression"), event(1, 7, "hide"),
        event(1, 8, "watch", watch_seconds=3.0), event(1, 9, "watch", watch_seconds=40.0),
        StreamEvent(event_id="ad", user_id=1, type="click", ts=1e9, ad_id=3),
    ], config)
    assert [(e.user_id, e.item_id) for e in found] == [(1, 5), (1, 9)]


def _topic_items(world, topic_index: int) -> np.ndarray:
    return world.items["item_id"].to_numpy()[world.item_topic_matrix[world.items["item_id"].to_numpy(), topic_index] > 0]


def _topic_affinity(vector: np.ndarray, two_tower: TwoTowerArtifacts, items: np.ndarray) -> float:
    rows = np.searchsorted(two_tower.item_ids, items)
    return float((two_tower.item_embeddings[rows] @ vector).mean())


def test_a_burst_of_likes_moves_the_embedding_toward_what_was_liked(world, two_tower):
    live = LiveEngagement(two_tower, DynamicEmbeddingConfig(dynamic_weight_active=0.8))
    user = int(world.users["user_id"].iloc[0])
    now = float(world.interactions["timestamp"].max()) + 60
    assert live.embedding(user, now) is None  # nothing fresh: the stored embedding is used
    # The topic the user's stored embedding likes least.
    topic = min(range(world.item_topic_matrix.shape[1]),
                key=lambda t: _topic_affinity(two_tower.user_embedding(user), two_tower, _topic_items(world, t)))
    liked = _topic_items(world, topic)[:8]
    live.observe([event(user, int(i), ts=now - 30 + k) for k, i in enumerate(liked)])
    assert live.fresh_items(user) == tuple(int(i) for i in liked[::-1])  # newest first
    fresh = live.embedding(user, now)
    assert fresh is not None and abs(np.linalg.norm(fresh) - 1) < 1e-5
    static = two_tower.user_embedding(user)
    rise = {t: _topic_affinity(fresh, two_tower, _topic_items(world, t)[8:])
            - _topic_affinity(static, two_tower, _topic_items(world, t)[8:])
            for t in range(world.item_topic_matrix.shape[1])}
    assert rise[topic] > 0.02 and rise[topic] == max(rise.values()), rise


def test_context_sets_the_dynamic_weight(two_tower, world):
    config = DynamicEmbeddingConfig(dynamic_weight_active=0.9, dynamic_weight_idle=0.2, active_session_s=600)
    live = LiveEngagement(two_tower, config)
    user = int(world.users["user_id"].iloc[1])
    live.observe([event(user, int(world.items["item_id"].iloc[3]), ts=1000.0)])
    assert live.dynamic_weight(user, 1000.0 + 60) == 0.9
    assert live.dynamic_weight(user, 1000.0 + 601) == 0.2
    assert live.dynamic_weight(user + 10_000, 1000.0) == 0.0
    static = two_tower.user_embedding(user)
    # Idle: closer to the static embedding than when active.
    assert live.embedding(user, 1000.0 + 601) @ static > live.embedding(user, 1000.0 + 60) @ static


def test_unknown_users_get_an_embedding_from_their_fresh_items(two_tower, world):
    live = LiveEngagement(two_tower, DynamicEmbeddingConfig())
    new_user = int(world.users["user_id"].max()) + 100
    assert two_tower.user_embedding(new_user) is None
    live.observe([event(new_user, int(world.items["item_id"].iloc[k]), ts=10.0 + k) for k in range(3)])
    assert live.embedding(new_user, 20.0) is not None


def test_attach_feeds_the_engagement_log_once_and_replays_into_a_new_artifact(two_tower, world):
    history = world.interactions[["user_id", "item_id", "timestamp"]]
    first = Served(two_tower, EngagementLog(history))
    live = LiveEngagement(two_tower, DynamicEmbeddingConfig())
    live.attach(first)
    user, item = int(world.users["user_id"].iloc[2]), 10_000_001
    ts = float(history["timestamp"].max()) + 5
    live.observe([event(user, item, ts=ts)])
    assert item in set(first.engagements.user_items(user).tolist())
    live.attach(first)  # same artifact (only tunables changed): nothing added twice
    assert (first.engagements.user_items(user) == item).sum() == 1
    second = Served(two_tower, EngagementLog(history))  # a newly loaded artifact
    live.attach(second)
    assert (second.engagements.user_items(user) == item).sum() == 1
    assert live.fresh_items(user) == (item,)


def test_history_features_include_fresh_items_as_if_they_were_in_the_snapshot(world):
    from app.ranking.config import RankingFeatureConfig
    from app.ranking.features import FeatureStore

    history = world.interactions
    user = int(history["user_id"].iloc[0])
    now = float(history["timestamp"].max()) + 100
    seen = set(history.loc[history["user_id"] == user, "item_id"])
    new_items = [int(i) for i in world.items["item_id"] if i not in seen][:6]
    extra = pd.DataFrame({"user_id": user, "item_id": new_items, "rating": 5.0,
                          "timestamp": [now - 50 + k for k in range(len(new_items))]})
    config = RankingFeatureConfig()
    store = FeatureStore.build(history, world.items, world.users, config)
    rebuilt = FeatureStore.build(pd.concat([history, extra], ignore_index=True), world.items, world.users, config)
    items = world.items["item_id"].to_numpy()[:200]
    users = np.full(len(items), user)
    overlay = store.pair_features(users, items, np.full(len(items), now), {user: tuple(new_items[::-1])})
    truth = rebuilt.pair_features(users, items, np.full(len(items), now))
    plain = store.pair_features(users, items, np.full(len(items), now))
    for name in ("user_log_count", "genre_affinity", "genre_affinity_max", "creator_log_count", "creator_share", "year_gap"):
        np.testing.assert_allclose(overlay[name], truth[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert not np.allclose(overlay["genre_affinity"], plain["genre_affinity"])
    # Co-occurrence and the item-item regression read the snapshot's tables over the longer history.
    hist = np.concatenate([store.user_history(user), np.array(new_items)])
    np.testing.assert_allclose(overlay["cooc_sum"], np.asarray(store.cooc[hist].sum(axis=0)).ravel()[items], rtol=1e-5)
    if store.cf_weights.size:
        np.testing.assert_allclose(overlay["cf_score"], store.cf_weights[hist].sum(axis=0)[items], rtol=1e-4, atol=1e-6)
    # Other users' rows are untouched.
    other = int(history["user_id"].iloc[-1])
    mixed = store.pair_features(np.array([other, user]), items[:2], np.full(2, now), {user: tuple(new_items)})
    alone = store.pair_features(np.array([other]), items[:1], np.full(1, now))
    assert mixed["genre_affinity"][0] == pytest.approx(alone["genre_affinity"][0])


def test_session_items_are_the_fresh_items_of_the_active_session(two_tower, world):
    live = LiveEngagement(two_tower, DynamicEmbeddingConfig(active_session_s=600))
    user = int(world.users["user_id"].iloc[4])
    items = world.items["item_id"].to_numpy()[:3]
    live.observe([event(user, int(items[0]), ts=1000.0), event(user, int(items[1]), ts=1900.0),
                  event(user, int(items[2]), ts=2000.0)])
    assert live.fresh_items(user) == (int(items[2]), int(items[1]), int(items[0]))
    assert live.session_items(user, 2100.0) == (int(items[2]), int(items[1]))
    assert live.session_items(user, 5000.0) == ()
