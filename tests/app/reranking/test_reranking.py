import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from app.catalog import Catalog, CatalogHydrator
from app.data.tables import Dataset
from app.pipeline import Candidates, FeedQuery, PipelineRunner
from app.retrieval.sources import SeenItemFilter
from app.reranking import (
    ContentRatingFilter,
    CreatorCapSelector,
    HiddenCreatorFilter,
    HiddenItemFilter,
    MMRSelector,
    UnknownItemFilter,
)

TOPICS = ("a", "b", "c")


def tiny_catalog(n_items=12):
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, n_items + 1),
            "title": [f"i{i}" for i in range(n_items)],
            "release_year": 2000,
            "topics": [(TOPICS[i % 3],) for i in range(n_items)],
            "creator_id": [1 + i % 4 for i in range(n_items)],
            "content_rating": ["R" if i % 5 == 0 else "PG" for i in range(n_items)],
            "min_age": [17 if i % 5 == 0 else 0 for i in range(n_items)],
        }
    )
    users = pd.DataFrame({"user_id": [1], "age": [30], "gender": ["F"], "occupation": ["x"], "zip_code": ["00000"]})
    empty = pd.DataFrame({"user_id": [], "item_id": [], "rating": [], "timestamp": [], "position": []})
    edges = pd.DataFrame({"user_id": [], "friend_id": [], "weight": [], "close": []})
    creators = pd.DataFrame({"creator_id": [1, 2, 3, 4], "entity": list("wxyz"), "n_items": 3})
    return Catalog.from_dataset(Dataset("tiny", users, items, creators, empty, edges, TOPICS))


def scored(ids, scores):
    return Candidates.from_source("ann", np.array(ids), np.zeros(len(ids))).with_scores(
        {"final": np.asarray(scores, dtype=np.float32)}
    )


def hydrated(catalog, candidates):
    return candidates.with_features(CatalogHydrator(catalog).hydrate(FeedQuery(user_id=1), candidates))


def test_policy_filters_drop_with_reasons():
    catalog = tiny_catalog()
    runner = PipelineRunner(
        "rerank",
        [],
        [
            UnknownItemFilter(catalog),
            SeenItemFilter(),
            HiddenItemFilter(),
            CatalogHydrator(catalog),
            HiddenCreatorFilter(),
            ContentRatingFilter(unknown_user_age=13),
        ],
    )
    query = FeedQuery(
        user_id=1,
        user_features={"age": 15},
        seen_item_ids=frozenset({2}),
        hidden_item_ids=frozenset({3}),
        hidden_creator_ids=frozenset({4}),
    )
    result = runner.run(query, scored([1, 2, 3, 4, 6, 7, 99], np.arange(7)))
    reasons = {r.item_id: r.reason for r in result.removals}
    assert reasons[99] == "not in catalogue"
    assert reasons[2] == "seen"
    assert reasons[3] == "item hidden by user"
    assert reasons[4] == "creator hidden by user"  # item 4 → creator 4
    assert reasons[1].startswith("content rating above user age 15") and reasons[6].startswith("content rating")
    assert result.candidates.item_ids.tolist() == [7]


def test_users_without_age_get_the_fail_safe_age():
    catalog = tiny_catalog()
    candidates = hydrated(catalog, scored([1, 2], [1, 1]))
    keep, reason = ContentRatingFilter(unknown_user_age=13).keep(FeedQuery(user_id=1), candidates)
    assert keep.tolist() == [False, True] and "13" in reason


def test_creator_cap_keeps_first_items_per_creator():
    catalog = tiny_catalog()
    candidates = hydrated(catalog, scored([1, 5, 9, 2, 3], [5, 4, 3, 2, 1]))  # 1,5,9 share creator 1
    chosen = CreatorCapSelector(max_per_creator=2).select(FeedQuery(user_id=1), candidates)
    assert candidates.item_ids[chosen].tolist() == [1, 5, 2, 3]


def test_mmr_with_lambda_one_is_relevance_order():
    catalog = tiny_catalog()
    candidates = scored([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1])
    chosen = MMRSelector(catalog, k=6, lambda_=1.0, creator_similarity=0.5).select(FeedQuery(user_id=1), candidates)
    assert candidates.item_ids[chosen].tolist() == [1, 2, 3, 4, 5, 6]


def test_mmr_diversifies_topics():
    catalog = tiny_catalog()
    # Items 1, 4, 7 share topic "a" and score highest; MMR at λ=0.5 should interleave other topics.
    candidates = scored([1, 4, 7, 2, 3], [1.0, 0.95, 0.9, 0.6, 0.55])
    chosen = MMRSelector(catalog, k=3, lambda_=0.5, creator_similarity=0.0).select(FeedQuery(user_id=1), candidates)
    picked_topics = {catalog.topic_names(int(i))[0] for i in candidates.item_ids[chosen]}
    assert picked_topics == {"a", "b", "c"}


@settings(max_examples=50, deadline=None)
@given(
    scores=st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=12),
    k=st.integers(1, 12),
    lam=st.floats(0, 1),
)
def test_mmr_returns_distinct_valid_positions(scores, k, lam):
    catalog = tiny_catalog()
    candidates = scored(list(range(1, len(scores) + 1)), scores)
    chosen = MMRSelector(catalog, k=k, lambda_=lam, creator_similarity=0.5).select(FeedQuery(user_id=1), candidates)
    assert len(chosen) == min(k, len(scores))
    assert len(set(chosen.tolist())) == len(chosen)
    assert int(np.argmax(candidates.scores["final"])) == chosen[0] or lam < 1.0 or np.ptp(scores) == 0


def test_the_takedown_filter_drops_taken_down_items_and_creators():
    import numpy as np

    from app.pipeline import Candidates, FeedQuery
    from app.reranking import TakedownFilter

    candidates = Candidates.from_source("ann", np.array([1, 2, 3, 4]), np.ones(4)).with_features(
        {"creator_id": np.array([10, 20, 30, 20])})
    keep, reason = TakedownFilter().keep(FeedQuery(user_id=1, taken_down_item_ids=frozenset({1}),
                                                   taken_down_creator_ids=frozenset({20})), candidates)
    assert keep.tolist() == [False, False, True, False] and reason == "taken down"
    assert TakedownFilter().keep(FeedQuery(user_id=1), candidates)[0].all()
