"""Prequential (test-then-train) replay of an interaction timeline, and its summary statistics.

Protocol, for each fixed time window after the base period, in time order:
  1. the users active in the window with at least one item they had not engaged before are
     evaluated: every strategy recommends top-k from what it knew before the window, excluding
     the user's earlier items, scored (Recall@k, NDCG@k) against the window's new items;
  2. on validation windows (the first `validation_windows`), ensembles record what each grid
     weight would have scored; after the last one their weights are frozen;
  3. every strategy observes the window (updates), then the shared log appends it.
Windows with fewer than `min_window_users` evaluable users are observed but not scored.
Only test windows (after the validation prefix) are summarised: nothing is tuned on them.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from app.evaluation.sets import UserItemSets
from app.freshness.config import ReplayConfig
from app.freshness.ensemble import ContextEnsembleStrategy, context_buckets, per_user_metric
from app.freshness.log import InteractionLog
from app.freshness.strategies import Strategy

WindowPhase = Literal["valid", "test"]
METRICS = ("recall", "ndcg")


@dataclass(frozen=True)
class ReplayWindow:
    index: int
    start: float
    end: float
    events: pd.DataFrame
    phase: WindowPhase


def replay_windows(events: pd.DataFrame, start: float, config: ReplayConfig) -> list[ReplayWindow]:
    """Fixed-length windows [start + i·window_s, start + (i+1)·window_s) covering `events`."""
    timestamps = events["timestamp"].to_numpy(np.float64)
    if len(timestamps) == 0:
        return []
    index = np.floor((timestamps - start) / config.window_s).astype(np.int64)
    if (index < 0).any():
        raise ValueError("events before the replay start")
    n = int(index.max()) + 1 if config.max_windows is None else min(int(index.max()) + 1, config.max_windows)
    return [
        ReplayWindow(i, start + i * config.window_s, start + (i + 1) * config.window_s,
                     events[index == i].reset_index(drop=True),
                     "valid" if i < config.validation_windows else "test")
        for i in range(n)
    ]


def window_truth(events: pd.DataFrame, seen: UserItemSets) -> UserItemSets:
    """Each user's window items minus those they had engaged before it."""
    old = seen.contains_pairs(events["user_id"].to_numpy(), events["item_id"].to_numpy())
    return UserItemSets.from_frame(events[~old])


def run_replay(
    strategies: Mapping[str, Strategy],
    log: InteractionLog,
    windows: Sequence[ReplayWindow],
    config: ReplayConfig,
    recent_activity_s: float,
    progress: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the protocol; returns (per-window rows, per-user rows) for every scored window.

    Per-window: window, phase, start, end, events, users, strategy, recall, ndcg.
    Per-user: window, phase, strategy, user_id, bucket (context before the window), recall, ndcg.
    """
    ensembles = [s for s in strategies.values() if isinstance(s, ContextEnsembleStrategy)]
    window_rows: list[dict] = []
    user_frames: list[pd.DataFrame] = []
    for window in windows:
        started = time.perf_counter()
        seen = log.seen
        truth = window_truth(window.events, seen)
        users = truth.user_ids
        scored = len(users) >= config.min_window_users
        if scored:
            truth_rows = truth.rows(users)
            buckets = context_buckets(log, users, recent_activity_s)
            for name, strategy in strategies.items():
                topk = strategy.recommend(users, config.k, seen)
                values = {metric: per_user_metric(topk, truth_rows, config.k, metric) for metric in METRICS}
                window_rows.append({
                    "window": window.index, "phase": window.phase, "start": window.start, "end": window.end,
                    "events": len(window.events), "users": len(users), "strategy": name,
                    **{metric: float(v.mean()) for metric, v in values.items()},
                })
                user_frames.append(pd.DataFrame({
                    "window": window.index, "phase": window.phase, "strategy": name, "user_id": users,
                    "bucket": buckets, **values,
                }))
            if window.phase == "valid":
                for ensemble in ensembles:
                    ensemble.learn(users, truth_rows, seen, config.k)
        for strategy in strategies.values():
            strategy.observe(window.events)
        log.add(window.events, as_of=window.end)
        if progress:
            line = " ".join(f"{r['strategy']}={r['recall']:.3f}" for r in window_rows[-len(strategies):]) if scored else "not scored"
            progress(f"window {window.index:>2} ({window.phase}) {len(window.events)} events, {len(users)} users: "
                     f"recall@{config.k} {line} ({time.perf_counter() - started:.1f}s)")
        last_validation = window.index == len(windows) - 1 or windows[window.index + 1].phase == "test"
        if window.phase == "valid" and last_validation:
            for ensemble in ensembles:
                weights = ensemble.freeze()
                if progress:
                    progress(f"{ensemble.name}: dynamic weight per context learned on validation: {weights}")
    per_user = pd.concat(user_frames, ignore_index=True) if user_frames else pd.DataFrame()
    return pd.DataFrame(window_rows), per_user


def paired_bootstrap(diffs: np.ndarray, samples: int, confidence: float, rng: np.random.Generator) -> tuple[float, float]:
    """Percentile interval of the mean of paired per-window differences, windows resampled."""
    diffs = np.asarray(diffs, np.float64)
    if len(diffs) == 0:
        return float("nan"), float("nan")
    means = diffs[rng.integers(0, len(diffs), size=(samples, len(diffs)))].mean(axis=1)
    tail = (1 - confidence) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def summarise(per_window: pd.DataFrame, reference: str, config: ReplayConfig) -> pd.DataFrame:
    """One row per strategy over the test windows: mean, std and worst window of each metric;
    stability (windows below `reference`, mean |change| between consecutive windows); and the
    mean paired difference to `reference` with its bootstrap interval."""
    test = per_window[per_window["phase"] == "test"]
    wide = {metric: test.pivot(index="window", columns="strategy", values=metric) for metric in METRICS}
    rows = []
    for strategy in test["strategy"].drop_duplicates():
        row: dict[str, float | str | int] = {"strategy": strategy, "windows": int(wide["recall"][strategy].notna().sum())}
        for metric in METRICS:
            values = wide[metric][strategy]
            diffs = (values - wide[metric][reference]).to_numpy()
            rng = np.random.default_rng(config.seed)
            low, high = paired_bootstrap(diffs, config.bootstrap_samples, config.confidence, rng)
            row.update({
                f"{metric}_mean": float(values.mean()), f"{metric}_std": float(values.std(ddof=1)),
                f"{metric}_worst": float(values.min()), f"{metric}_below": int((diffs < 0).sum()),
                f"{metric}_step": float(values.diff().abs().mean()), f"{metric}_diff": float(diffs.mean()),
                f"{metric}_diff_low": low, f"{metric}_diff_high": high,
            })
        rows.append(row)
    return pd.DataFrame(rows)


def bucket_table(per_user: pd.DataFrame) -> pd.DataFrame:
    """Mean metrics per strategy and context bucket over the test windows' users (pooled)."""
    test = per_user[per_user["phase"] == "test"]
    table = test.groupby(["strategy", "bucket"], sort=False)[list(METRICS)].mean().unstack("bucket")
    table.columns = [f"{metric}_{bucket}" for metric, bucket in table.columns]
    counts = test[test["strategy"] == test["strategy"].iloc[0]].groupby("bucket").size() if len(test) else pd.Series(dtype=int)
    table.attrs["users"] = {str(b): int(n) for b, n in counts.items()}
    return table.reset_index()
