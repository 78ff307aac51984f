"""Prequential replay: windows, truth, the test-then-train order, the summary statistics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app.evaluation.sets import PAD, UserItemSets
from app.freshness.config import ReplayConfig
from app.freshness.log import InteractionLog
from app.freshness.prequential import paired_bootstrap, replay_windows, run_replay, summarise, window_truth

DAY = 86_400.0


def _events(n_days: int, users_per_day: int = 6) -> pd.DataFrame:
    rows = [(u, 1000 + (d * 7 + u) % 50, 4, d * DAY + u * 60.0) for d in range(n_days) for u in range(users_per_day)]
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


class Recorder:
    """Records what it was asked and what the log held at each call; recommends fixed items."""

    def __init__(self, name: str, log: InteractionLog, items: list[int]) -> None:
        self.name, self.log, self.items = name, log, items
        self.observed: list[tuple[float, float]] = []  # (log.as_of, window's first timestamp)

    def observe(self, window: pd.DataFrame) -> None:
        self.observed.append((self.log.as_of, float(window["timestamp"].min())))

    def recommend(self, user_ids: np.ndarray, k: int, exclude: UserItemSets) -> np.ndarray:
        out = np.full((len(user_ids), k), PAD)
        out[:, : len(self.items)] = self.items[:k]
        return out


def test_windows_partition_the_events_and_mark_the_validation_prefix() -> None:
    events = _events(10)
    windows = replay_windows(events, 0.0, ReplayConfig(window_s=2 * DAY, validation_windows=2))
    assert [len(w.events) for w in windows] == [12] * 5
    assert [w.phase for w in windows] == ["valid", "valid", "test", "test", "test"]
    assert all(((w.events["timestamp"] >= w.start) & (w.events["timestamp"] < w.end)).all() for w in windows)
    capped = replay_windows(events, 0.0, ReplayConfig(window_s=2 * DAY, validation_windows=2, max_windows=3))
    assert len(capped) == 3
    with pytest.raises(ValueError, match="before the replay start"):
        replay_windows(events, DAY, ReplayConfig())


def test_window_truth_drops_items_the_user_had_before() -> None:
    seen = UserItemSets.from_frame(pd.DataFrame({"user_id": [1], "item_id": [5]}))
    truth = window_truth(pd.DataFrame({"user_id": [1, 1, 2], "item_id": [5, 6, 5]}), seen)
    assert truth.items_of(1).tolist() == [6] and truth.items_of(2).tolist() == [5]


def test_each_window_is_scored_before_it_is_observed_and_logged() -> None:
    events = _events(8)
    base, later = events[events["timestamp"] < 2 * DAY], events[events["timestamp"] >= 2 * DAY]
    log = InteractionLog(base, as_of=2 * DAY)
    config = ReplayConfig(window_s=2 * DAY, validation_windows=1, min_window_users=1, k=3, bootstrap_samples=100)
    windows = replay_windows(later, 2 * DAY, config)
    good = Recorder("good", log, list(np.unique(later["item_id"]))[:3])
    bad = Recorder("bad", log, [9999])
    per_window, per_user = run_replay({"bad": bad, "good": good}, log, windows, config, recent_activity_s=DAY)

    assert len(per_window) == 2 * len(windows) and set(per_user["bucket"]) <= {"new", "recent", "returning"}
    # observe sees the log as of the window start: the window itself is not in it yet
    assert [as_of for as_of, _ in good.observed] == [w.start for w in windows]
    assert log.as_of == windows[-1].end and len(log.frame) == len(events)
    assert (per_window[per_window["strategy"] == "bad"]["recall"] == 0).all()

    summary = summarise(per_window, "bad", config).set_index("strategy")
    assert summary.loc["bad", "recall_diff"] == 0 and summary.loc["bad", "windows"] == len(windows) - 1
    assert summary.loc["bad", "recall_below"] == 0 and summary.loc["bad", "recall_step"] == 0
    test = per_window[(per_window["phase"] == "test") & (per_window["strategy"] == "good")]["recall"]
    assert summary.loc["good", "recall_step"] == pytest.approx(np.abs(np.diff(test.to_numpy())).mean())
    assert summary.loc["good", "recall_diff_low"] <= summary.loc["good", "recall_diff"] <= summary.loc["good", "recall_diff_high"]


def test_paired_bootstrap_interval_shrinks_to_a_constant_difference() -> None:
    rng = np.random.default_rng(0)
    assert paired_bootstrap(np.full(10, 0.02), 500, 0.95, rng) == pytest.approx((0.02, 0.02))
    low, high = paired_bootstrap(rng.normal(0.05, 0.01, 40), 2000, 0.95, rng)
    assert low < 0.05 < high and high - low < 0.02
