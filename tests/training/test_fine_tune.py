"""The fine-tune job on a small synthetic world: warm start, offline gate, versioned publish."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.artifacts import ArtifactStore
from config import config_from_mapping
from app.organic import OrganicModels
from app.state.events import StreamEvent
from training.fine_tune import FRESH_FILE, engagement_interactions, fine_tune


@pytest.fixture(scope="module")
def published(small_world, small_config_, trained_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("fine_tune_artifacts")
    store = ArtifactStore(root)
    version, staging = store.new_version()
    trained_models.save(staging / "organic")
    (staging / "ads").mkdir()
    (staging / "ads" / "bundle.json").write_text("{}")  # carried over untouched
    store.publish(version, staging, {"dataset": small_world.name, "as_of": trained_models.meta["as_of"]})
    mapping = small_config_.model_dump(mode="json", exclude={"redis_url"})
    mapping["artifacts"] = {"root": str(root), "version": None}
    return root, version, mapping


def stream_events(world, n_users: int = 40, per_user: int = 5, seed: int = 0) -> list[StreamEvent]:
    rng = np.random.default_rng(seed)
    now = float(world.interactions["timestamp"].max())
    users = world.users["user_id"].to_numpy()[:n_users]
    items = world.items["item_id"].to_numpy()
    out = []
    for u in users:
        for k, item in enumerate(rng.choice(items, per_user, replace=False)):
            out.append(StreamEvent(event_id=f"ft-{u}-{item}", user_id=int(u), type="like", ts=now + 60 * (k + 1),
                                   item_id=int(item)))
        out.append(StreamEvent(event_id=f"imp-{u}", user_id=int(u), type="impression", ts=now + 1, item_id=int(items[0])))
    return out


def test_engagement_events_become_interactions_with_implied_ratings():
    events = [StreamEvent("a", 1, "like", 10.0, item_id=5), StreamEvent("b", 1, "click", 11.0, item_id=6),
              StreamEvent("c", 1, "impression", 12.0, item_id=7), StreamEvent("d", 1, "click", 13.0, ad_id=3)]
    frame = engagement_interactions(events, {"like": 5.0, "click": 4.0})
    assert frame[["item_id", "rating"]].values.tolist() == [[5, 5.0], [6, 4.0]]
    assert frame["event_id"].tolist() == ["a", "b"]


def test_fine_tune_publishes_a_gated_child_version(published, small_world):
    root, parent, mapping = published
    config = config_from_mapping({**mapping, "training": {**mapping["training"], "fine_tune": {"gate_tolerance": 0.05}}})
    events = stream_events(small_world)
    new = engagement_interactions(events, config.training.fine_tune.implied_ratings)
    outcome = fine_tune(config, new, reason="test", use_ray=False, log=lambda m: None, dataset=small_world)
    assert outcome.parent == parent and outcome.gate.passed, outcome.gate.summary
    assert outcome.version is not None and ArtifactStore(root).latest().version == outcome.version
    child = ArtifactStore(root).get(outcome.version)
    manifest = child.manifest()
    assert manifest["parent"] == parent and manifest["gate"]["passed"] and manifest["new_interactions"] == len(new)
    assert (child.path / "ads" / "bundle.json").exists()
    fresh = pd.read_parquet(child.path / "organic" / FRESH_FILE)
    assert len(fresh) == len(new) and fresh["event_id"].is_unique
    models = OrganicModels.load(child.path / "organic", small_world, config)
    parent_models = OrganicModels.load(ArtifactStore(root).get(parent).path / "organic", small_world, config)
    # Warm-started, not retrained from scratch: close to the parent, but moved.
    delta = np.abs(models.two_tower.item_embeddings - parent_models.two_tower.item_embeddings).mean()
    assert 0 < delta < 0.5
    user = int(new["user_id"].iloc[0])
    assert set(new.loc[new["user_id"] == user, "item_id"]) <= set(models.engagements.user_items(user).tolist())
    assert models.meta["as_of"] == pytest.approx(float(new["timestamp"].max()))

    # The same events again (a re-delivered batch) are not counted twice.
    again = fine_tune(config_from_mapping({**mapping, "training": {**mapping["training"],
                                                                    "fine_tune": {"gate_tolerance": 1.0}}}),
                      new, reason="redelivery", use_ray=False, log=lambda m: None, dataset=small_world)
    grandchild = ArtifactStore(root).get(again.version)
    fresh_again = pd.read_parquet(grandchild.path / "organic" / FRESH_FILE)
    assert len(fresh_again) == len(new)
    # Restarted from the base, not chained on the child (the stable strategy of the replay).
    assert grandchild.manifest()["parent"] == outcome.version
    assert grandchild.manifest()["started_from"] == parent


def test_the_gate_refuses_a_broken_candidate_and_publishes_nothing(published, small_world):
    root, _, mapping = published
    before = ArtifactStore(root).latest().version
    broken = {**mapping, "training": {**mapping["training"], "fine_tune": {
        "two_tower_lr": 1.0, "two_tower_epochs": 3, "anchor_l2": 0.0, "gate_tolerance": 0.0}}}
    events = stream_events(small_world, seed=1)
    config = config_from_mapping(broken)
    outcome = fine_tune(config, engagement_interactions(events, config.training.fine_tune.implied_ratings),
                        reason="test", use_ray=False, log=lambda m: None, dataset=small_world)
    assert not outcome.gate.passed and outcome.version is None, outcome.gate.summary
    assert outcome.gate.candidate < outcome.gate.current
    assert ArtifactStore(root).latest().version == before


def test_the_ranker_fine_tune_learns_from_the_streams_impressions(published, small_world):
    """Impressions are not dropped: every one shown in the window is a ranker example, the
    engaged ones positive; the published version keeps the event log for the next job."""
    from training.fine_tune import FRESH_EVENTS_FILE, event_log

    root, _, mapping = published
    config = config_from_mapping({**mapping, "training": {**mapping["training"], "fine_tune": {"gate_tolerance": 1.0}}})
    rng = np.random.default_rng(3)
    now = float(small_world.interactions["timestamp"].max())
    events = []
    for u in small_world.users["user_id"].to_numpy()[:30]:
        shown = rng.choice(small_world.items["item_id"].to_numpy(), 6, replace=False)
        for k, item in enumerate(shown):
            request = f"r-{u}"
            events.append(StreamEvent(f"i-{u}-{item}", int(u), "impression", now + 10, item_id=int(item),
                                      position=k + 1, request_id=request))
            if k < 2:  # the top two are clicked, the first also liked
                events.append(StreamEvent(f"c-{u}-{item}", int(u), "click", now + 20, item_id=int(item),
                                          request_id=request))
            if k == 0:
                events.append(StreamEvent(f"l-{u}-{item}", int(u), "like", now + 30, item_id=int(item),
                                          request_id=request))
    logged: list[str] = []
    outcome = fine_tune(config, engagement_interactions(events, config.training.fine_tune.implied_ratings),
                        reason="impressions", use_ray=False, log=logged.append, dataset=small_world,
                        new_events=event_log(events))
    assert outcome.version is not None, outcome.gate.summary
    learned = [m for m in logged if m.startswith("ranker fine-tune: learning from")]
    assert learned and "180 impressions" in learned[0] and "33.3% clicked" in learned[0]
    assert any(m.startswith("ranker examples: 180 rows, 60 positives") for m in logged)
    kept = pd.read_parquet(ArtifactStore(root).get(outcome.version).path / "organic" / FRESH_EVENTS_FILE)
    assert (kept["event"] == "impression").sum() == 180 and kept["event_id"].is_unique
