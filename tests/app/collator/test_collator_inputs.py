"""The collator's organic input: reranked candidates as OrganicEntry, columns mapped item by item."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from app.catalog import Catalog
from app.collator.inputs import organic_entries
from app.collator.types import OrganicEntry
from app.pipeline import Candidates

TOPICS = ("drama", "comedy", "horror", "kids")


def catalog_with(topic_rows: list[list[int]]) -> Catalog:
    matrix = np.asarray(topic_rows, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    n = len(topic_rows)
    return Catalog(
        creator_id=np.arange(n, dtype=np.int64) * 10,
        min_age=np.asarray([0, 13, 17, 0, 7][:n] + [0] * max(0, n - 5), dtype=np.int16),
        topic_matrix=np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0),
        topics=TOPICS,
        known=np.ones(n, dtype=bool),
    )


def test_entries_map_each_column_to_its_item():
    catalog = catalog_with([[0, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1], [0, 0, 0, 0]])
    candidates = Candidates.from_source("ann", np.array([3, 1, 2]), np.zeros(3)).with_scores(
        {"final": np.array([0.7, -0.2, 0.4], np.float32), "p_click": np.array([1.3, 0.25, -0.1])}
    ).with_features({"close_friend": np.array([False, True, False])})

    entries = organic_entries(candidates, catalog)

    assert entries == [
        OrganicEntry(item_id=3, value=np.float32(0.7).item(), p_engage=1.0, creator_id=30,
                     topics=("drama", "kids"), min_age=0, close_friend=False),
        OrganicEntry(item_id=1, value=0.0, p_engage=0.25, creator_id=10,
                     topics=("drama", "comedy"), min_age=13, close_friend=True),
        OrganicEntry(item_id=2, value=np.float32(0.4).item(), p_engage=0.0, creator_id=20,
                     topics=("horror",), min_age=17, close_friend=False),
    ]
    assert all(type(e.item_id) is int and type(e.value) is float and type(e.close_friend) is bool for e in entries)


def test_entries_without_click_scores_or_friend_flags_default_to_zero_and_false():
    catalog = catalog_with([[1, 0, 0, 0], [0, 1, 0, 0]])
    candidates = Candidates.from_source("ann", np.array([1, 0]), np.zeros(2)).with_scores(
        {"final": np.array([0.5, 0.1], np.float32)}
    )
    entries = organic_entries(candidates, catalog)
    assert [(e.p_engage, e.close_friend) for e in entries] == [(0.0, False), (0.0, False)]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.integers(0, 1), min_size=4, max_size=4), min_size=1, max_size=8), st.data())
def test_topic_names_are_each_items_topics_in_catalogue_order(rows, data):
    catalog = catalog_with(rows)
    items = data.draw(st.lists(st.integers(0, len(rows) - 1), max_size=12))
    expected = [tuple(t for t, on in zip(TOPICS, rows[i]) if on) for i in items]
    assert catalog.topic_names_of(np.array(items, dtype=np.int64)) == expected
    assert [catalog.topic_names(i) for i in items] == expected
