"""The organic pipeline and the feed service end to end on a small synthetic world."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.ads.pacing import BudgetPacer
from app.ads.server import AdServer
from app.collator.collator import Collator
from app.collator.rules import page_violations
from app.organic import OrganicRequest
from app.feed import FeedService
from app.organic import OrganicModels, OrganicPipeline
from app.state.budgets import InMemoryBudgetStore
from app.state.caps import InMemoryCapStore
from app.state.clock import ManualClock
from training.ads import train_ads


def test_pipeline_parts_shrink_candidates_in_order(trained_models, small_config_):
    pipeline = OrganicPipeline(trained_models, small_config_)
    query = trained_models.query(5, now=trained_models.engagements.last_timestamp, limit=20)
    result = pipeline.run(query)
    sizes = [len(result.parts[p].candidates) for p in ("retrieval", "ranking", "reranking")]
    assert sizes[0] > sizes[1] >= sizes[2] > 0
    assert sizes[1] <= small_config_.ranking.output_size and sizes[2] <= small_config_.reranking.output_size
    served = result.candidates
    assert not set(served.item_ids.tolist()) & query.seen_item_ids
    assert {"p_click", "p_like", "p_share", "p_hide", "e_watch", "final"} <= set(served.scores)
    assert set(served.sources) <= {"ann", "coengagement", "social", "trending"}
    creators = pd.Series(served.features["creator_id"]).value_counts()
    assert creators.max() <= small_config_.reranking.max_items_per_creator
    stages = [r.name for p in result.parts.values() for r in p.records]
    assert stages[:5] == ["ann", "coengagement", "social", "trending", "fresh"] and stages[-1] == "exploration_slot"


def test_pipeline_explains_every_removal(trained_models, small_config_):
    pipeline = OrganicPipeline(trained_models, small_config_)
    query = trained_models.query(7, now=trained_models.engagements.last_timestamp, limit=20,
                                 hidden_item_ids=frozenset({1, 2, 3}))
    retrieval = pipeline.run(query, through="retrieval").parts["retrieval"]
    by_stage = {r.stage for r in retrieval.removals}
    assert "seen_items" in by_stage
    assert all(r.reason for r in retrieval.removals)
    assert not {1, 2, 3} & set(retrieval.candidates.item_ids.tolist())


def test_models_round_trip_through_an_artifact_directory(trained_models, small_world, small_config_, tmp_path):
    trained_models.save(tmp_path / "organic")
    loaded = OrganicModels.load(tmp_path / "organic", small_world, small_config_)
    assert not loaded.neighbours.neighbours.flags.writeable  # the saved neighbours, mapped, not rebuilt
    np.testing.assert_array_equal(loaded.neighbours.similarities, trained_models.neighbours.similarities)
    now = trained_models.engagements.last_timestamp
    a = OrganicPipeline(trained_models, small_config_).run(trained_models.query(9, now=now, limit=20)).candidates
    b = OrganicPipeline(loaded, small_config_).run(loaded.query(9, now=now, limit=20)).candidates
    assert a.item_ids.tolist() == b.item_ids.tolist()
    np.testing.assert_allclose(a.scores["final"], b.scores["final"], rtol=1e-5)


def test_the_ranker_beats_popularity_on_held_out_interactions(small_world, small_config_):
    """Trained on retrieval candidates, the ranker must find clearly more of each user's
    held-out interactions than the trending (popularity) order of the same candidates."""
    from training.organic import fit_organic, production_split

    history, test = production_split(small_world.interactions, 0.1)
    history, labels = production_split(history, 0.1)
    models = fit_organic(small_world, history, labels, small_config_, use_ray=False, log=lambda m: None)
    pipeline = OrganicPipeline(models, small_config_)
    truth = test.groupby("user_id")["item_id"].apply(set)
    hits_ranked, hits_retrieved = 0, 0
    for user_id, items in truth.items():
        query = models.query(int(user_id), now=models.engagements.last_timestamp, limit=20)
        result = pipeline.run(query, through="ranking")
        retrieved = result.parts["retrieval"].candidates
        top_retrieved = retrieved.item_ids[np.argsort(-retrieved.features["src_trending"], kind="stable")][:20]
        hits_ranked += len(items & set(result.candidates.item_ids[:20].tolist()))
        hits_retrieved += len(items & set(top_retrieved.tolist()))
    assert hits_ranked > 1.3 * hits_retrieved


@pytest.fixture(scope="module")
def feed_service(trained_models, small_world, small_config_):
    bundle, figures = train_ads(small_world, small_world.interactions, small_config_.ads,
                                now=trained_models.engagements.last_timestamp)
    assert figures["ads.pctr_logloss"] < figures["ads.constant_logloss"]
    clock = ManualClock(trained_models.engagements.last_timestamp)
    ads = AdServer(bundle.world, bundle.ranker, BudgetPacer.from_config(bundle.forecast, small_config_.ads),
                   InMemoryCapStore(), InMemoryBudgetStore(small_config_.ads.reservation_ttl_s),
                   small_config_.ads, clock)
    service = FeedService(OrganicPipeline(trained_models, small_config_), Collator(small_config_.collator), ads,
                          dict(bundle.users), small_config_.api.max_pages)
    return service, clock


def test_feed_pages_obey_the_blending_rules_and_release_unplaced_ads(feed_service, trained_models):
    service, clock = feed_service
    placed_ads = 0
    for user_id in range(1, 60):
        request = OrganicRequest(user_id, clock(), 20, f"r{user_id}")
        page = service.page(request).assembled.collated
        organic = [s.item for s in page.slots if s.kind == "organic"]
        assert page_violations(page.slots, page.rules, organic) == []
        placed = {s.ref_id for s in page.slots if s.kind == "ad"}
        placed_ads += len(placed)
        unplaced = {a.ad_id for a in page.unplaced_ads}
        # Released reservations: committing an unplaced ad's impression must not charge anything.
        for ad_id in unplaced:
            assert service.ads.commit_impression(request.request_id, ad_id) is False
        assert [s.position for s in page.slots] == list(range(1, len(page.slots) + 1))
    assert placed_ads > 0


def test_redis_unreachable_withholds_ads_and_keeps_the_organic_feed(trained_models, small_world, small_config_):
    from app.ads.types import WithheldReason
    from app.state._redis import fail_fast_client
    from app.state.budgets import RedisBudgetStore
    from app.state.caps import RedisCapStore
    from app.state.local_redis import free_port

    bundle, _ = train_ads(small_world, small_world.interactions, small_config_.ads,
                          now=trained_models.engagements.last_timestamp)
    dead = fail_fast_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.05)  # nothing listens there
    config = small_config_.ads
    clock = ManualClock(trained_models.engagements.last_timestamp)
    ads = AdServer(bundle.world, bundle.ranker, BudgetPacer.from_config(bundle.forecast, config),
                   RedisCapStore(dead, config.session_ttl_s, config.state_key_grace_s),
                   RedisBudgetStore(dead, config.reservation_ttl_s, config.state_key_grace_s), config, clock)
    service = FeedService(OrganicPipeline(trained_models, small_config_), Collator(small_config_.collator), ads,
                          dict(bundle.users), small_config_.api.max_pages)
    page = service.page(OrganicRequest(3, clock(), 20, "r-down"))
    kinds = [s.kind for s in page.slots]
    assert "ad" not in kinds
    # The organic feed is kept: every slot organic or a notification, and nearly a full page (the
    # collator's own rules may still drop an item, as with Redis up).
    assert set(kinds) <= {"organic", "notification"} and kinds.count("organic") >= 16, kinds
    assert page.ads.result.withheld_reason == WithheldReason.STORE_UNAVAILABLE
    assert page.body["ads_withheld"] == WithheldReason.STORE_UNAVAILABLE.value


def test_retrieval_on_models_cut_to_item_ids_returns_the_same_candidates(trained_models, small_config_):
    """What a Retrieval replica keeps (`OrganicModels.for_retrieval`): the items frame cut to its
    ids; its catalogue arrays hold every attribute retrieval reads."""
    slim = trained_models.for_retrieval()
    assert list(slim.dataset.items.columns) == ["item_id"]
    assert "title" in trained_models.dataset.items.columns  # the full models are untouched
    assert slim.dataset.n_items == trained_models.dataset.n_items
    now = trained_models.engagements.last_timestamp
    for user_id in (7, 9, 30):
        full = OrganicPipeline(trained_models, small_config_).run(
            trained_models.query(user_id, now=now, limit=20, hidden_creator_ids=frozenset({2})), through="retrieval")
        cut = OrganicPipeline(slim, small_config_).run(
            slim.query(user_id, now=now, limit=20, hidden_creator_ids=frozenset({2})), through="retrieval")
        a, b = full.parts["retrieval"].candidates, cut.parts["retrieval"].candidates
        assert a.item_ids.tolist() == b.item_ids.tolist()
        for name, column in a.features.items():
            np.testing.assert_array_equal(np.asarray(column), np.asarray(b.features[name]), err_msg=name)
