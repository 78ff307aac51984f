"""The exploration slot's selectors on hand-made candidates."""
from __future__ import annotations

import numpy as np

from app.pipeline.candidates import Candidates, FeedQuery
from app.reranking.config import ExplorationConfig
from app.reranking.exploration import ExplorationPicker, ExplorationSlot, KeepingExplored
from app.reranking.selectors import TopKSelector

QUERY = FeedQuery(user_id=1)


def candidates(n: int, young: list[int], engaged: dict[int, int] | None = None) -> Candidates:
    age = np.full(n, np.inf, np.float32)
    age[young] = 60.0
    engagements = np.zeros(n, np.float32)
    for row, count in (engaged or {}).items():
        engagements[row] = count
    c = Candidates.from_source("ann", np.arange(100, 100 + n), np.linspace(1, 0, n, dtype=np.float32))
    return c.with_features({"published_age_s": age, "item_engagements": engagements}).with_scores(
        {"final": np.linspace(1, 0, n, dtype=np.float32)})


def test_the_picker_reserves_the_best_young_unproven_items():
    config = ExplorationConfig(max_items=1, max_engagements=5)
    marked = ExplorationPicker(config).hydrate(QUERY, candidates(20, young=[12, 15, 3], engaged={3: 50}))
    assert np.flatnonzero(marked["explored"]).tolist() == [12]  # row 3 is proven (50 engagements)


def test_reserved_rows_survive_a_cut_and_land_in_the_band():
    config = ExplorationConfig(max_items=1, first_position=3, last_position=5)
    c = candidates(20, young=[15])
    c = c.with_features(ExplorationPicker(config).hydrate(QUERY, c))
    kept = KeepingExplored(TopKSelector(5)).select(QUERY, c)
    assert 15 in kept.tolist() and len(kept) == 6
    c = c.take(kept)
    order = ExplorationSlot(config).select(QUERY, c)
    assert c.take(order).item_ids.tolist()[:4] == [100, 101, 115, 102]


def test_nothing_moves_without_young_items_or_with_the_slot_off():
    c = candidates(10, young=[])
    assert ExplorationPicker(ExplorationConfig()).hydrate(QUERY, c)["explored"].sum() == 0
    off = candidates(10, young=[9])
    assert ExplorationPicker(ExplorationConfig(max_items=0)).hydrate(QUERY, off)["explored"].sum() == 0
    assert ExplorationSlot(ExplorationConfig()).select(QUERY, c).tolist() == list(range(10))
