"""Published items through the real organic pipeline (trained two-tower, FAISS, DCN) in one
process: the same `with_published` the Serve replicas apply."""
from __future__ import annotations

import numpy as np
import pytest

from app.freshness.published import ItemBase, PublishedItems
from app.organic import OrganicPipeline, organic_provenance
from app.state.items import StreamedItem


def _liked_topic(models, user: int) -> str:
    history = models.engagements.user_items(user)
    shares = models.catalog.topic_matrix[history].sum(axis=0)
    return models.catalog.topics[int(np.argmax(shares))]


def _publish(models, items: list[dict], base_seq: int = 0) -> tuple:
    entries = [StreamedItem(f"1-{k}", base_seq + k, 900 + k, item) for k, item in enumerate(items)]
    published = PublishedItems().apply(entries, caught_up=True)
    placed = published.place(ItemBase.of(models.catalog.known, models.catalog.creator_id, models.dataset.ids))
    return placed, models.with_published(placed)


def _item(item_id: int, topic: str, now: float, creator: int = 99_001, **extra) -> dict:
    return {"item_id": item_id, "creator_id": creator, "created_at": now, "published_at": now, "topics": [topic],
            "content_rating": "PG", "min_age": 0, "title": f"new {item_id}", **extra}


@pytest.fixture(scope="module")
def user_and_now(trained_models):
    return 5, float(trained_models.engagements.last_timestamp)


def test_a_published_item_reaches_the_page_of_a_user_who_likes_its_topic(trained_models, small_config_, user_and_now):
    user, now = user_and_now
    topic = _liked_topic(trained_models, user)
    placed, serving = _publish(trained_models, [_item(50_000, topic, now)])
    index = placed.index_of[50_000]
    assert index == len(trained_models.catalog.known)  # first slot after the artifact's
    assert serving.catalog.is_known(np.array([index]))[0] and serving.catalog.topic_names(index) == (topic,)

    result = OrganicPipeline(serving, small_config_).run(serving.query(user, now=now + 60, limit=20))
    retrieved = result.parts["retrieval"].candidates
    assert index in retrieved.item_ids.tolist()
    row = retrieved.item_ids.tolist().index(index)
    assert retrieved.features["published_age_s"][row] == pytest.approx(60.0)
    assert retrieved.features["src_fresh"][row] > 0  # the fresh lane found it
    ranked = result.parts["ranking"].candidates
    if index in ranked.item_ids.tolist():  # the ranker scored it from its content, not as an unknown item
        r = ranked.item_ids.tolist().index(index)
        assert np.isfinite(ranked.scores["final"][r])
    served = result.candidates.item_ids.tolist()
    assert index in served[:small_config_.reranking.exploration.last_position]  # the exploration slot at worst
    assert organic_provenance(result.candidates)[index]["explored"] is True
    assert organic_provenance(result.candidates)[index]["source"] in ("ann", "fresh")


def test_the_exploration_slot_can_be_switched_off(trained_models, small_config_, user_and_now):
    user, now = user_and_now
    off = small_config_.model_copy(update={"reranking": small_config_.reranking.model_copy(
        update={"exploration": small_config_.reranking.exploration.model_copy(update={"max_items": 0})})})
    placed, serving = _publish(trained_models, [_item(50_003, "no-such-topic-match", now)])
    result = OrganicPipeline(serving, off).run(serving.query(user, now=now + 60, limit=20))
    assert "explored" not in organic_provenance(result.candidates).get(placed.index_of[50_003], {})


def test_the_models_without_published_items_never_return_them(trained_models, small_config_, user_and_now):
    user, now = user_and_now
    result = OrganicPipeline(trained_models, small_config_).run(trained_models.query(user, now=now, limit=20))
    assert result.candidates.item_ids.max() < len(trained_models.catalog.known)


def test_items_older_than_the_fresh_window_leave_the_fresh_lane(trained_models, small_config_, user_and_now):
    user, now = user_and_now
    topic = _liked_topic(trained_models, user)
    old = now - small_config_.retrieval.fresh.window_s - 10
    placed, serving = _publish(trained_models, [_item(50_001, topic, old, published_at=old)])
    retrieved = OrganicPipeline(serving, small_config_).run(
        serving.query(user, now=now, limit=20), through="retrieval").parts["retrieval"].candidates
    index = placed.index_of[50_001]
    rows = [k for k, i in enumerate(retrieved.item_ids.tolist()) if i == index]
    assert all(retrieved.features["src_fresh"][k] == 0 for k in rows)


def test_the_ranker_sees_a_published_items_content(trained_models, user_and_now):
    user, now = user_and_now
    topic = _liked_topic(trained_models, user)
    placed, serving = _publish(trained_models, [_item(50_002, topic, now, content_rating="R", min_age=17)])
    index = placed.index_of[50_002]
    store = serving.ranker.store
    features = store.pair_features(np.array([user]), np.array([index]), np.array([now]))
    assert features["item_min_age"][0] == 17
    assert features["genre_affinity"][0] > 0  # the user's topic share, not the unknown item's zero
    assert features["item_log_count"][0] == 0 and features["item_id"][0] == 0  # no interactions, no id row
    unknown = trained_models.ranker.store.pair_features(np.array([user]), np.array([index]), np.array([now]))
    assert unknown["genre_affinity"][0] == 0


def test_every_stage_places_published_items_at_the_same_index(trained_models):
    """Retrieval, reranking and the ingress read the catalogue; ranking reads its feature store:
    all must derive the same layout, or a page would name the wrong item."""
    catalog, store = trained_models.catalog, trained_models.ranker.store
    from_catalog = ItemBase.of(catalog.known, catalog.creator_id, trained_models.dataset.ids)
    from_ranker = ItemBase.of(store.item_creator >= 0, store.item_creator, trained_models.dataset.ids)
    assert (from_catalog.item_slots, from_catalog.creator_slots) == (from_ranker.item_slots, from_ranker.creator_slots)
    entries = [StreamedItem("1-0", 3, 0, _item(60_000, "x", 1.0))]
    a = PublishedItems().apply(entries, True).place(from_catalog)
    b = PublishedItems().apply(entries, True).place(from_ranker)
    assert dict(a.index_of) == dict(b.index_of) == {60_000: from_catalog.item_slots + 3}


def test_items_past_the_retention_leave_the_fresh_index_but_stay_in_the_catalogue(trained_models, user_and_now):
    _, now = user_and_now
    day = 86_400.0
    entries = [StreamedItem("1-0", 0, 0, _item(60_001, "a", now - 10 * day, published_at=now - 10 * day)),
               StreamedItem("2-0", 1, 0, _item(60_002, "a", now, published_at=now))]
    placed = PublishedItems().apply(entries, True).place(
        ItemBase.of(trained_models.catalog.known, trained_models.catalog.creator_id, trained_models.dataset.ids))
    serving = trained_models.with_published(placed, retention_s=7 * day)
    old, new = placed.index_of[60_001], placed.index_of[60_002]
    assert serving.fresh.item_ids.tolist() == [new]
    assert serving.catalog.is_known(np.array([old, new])).all()
