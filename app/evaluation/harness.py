"""The evaluation harness: one protocol for every model, one row of metrics per model.

`evaluate(model, split, phase)` with a Recommender fits it on split.fit_data(phase), asks for
top-K lists of every user with a non-empty split.truth(phase), excluding split.history(phase),
and scores them. With TopKLists (a pipeline that was fit on split.fit_data(phase) by its owner)
it scores the given lists; a list holding a history item is an error, not a silent filter,
because it would mean the pipeline breaks the never-recommend-seen contract.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from app.evaluation import metrics as m
from app.evaluation.config import EASEConfig, ItemKNNConfig, MetricsConfig
from app.evaluation.recommenders import (
    EASERecommender,
    ItemKNNRecommender,
    Recommender,
    RecommenderFactory,
)
from app.evaluation.sets import PAD, TopKLists
from app.evaluation.split import Phase, Split

T = TypeVar("T")


def evaluate(
    model: Recommender | TopKLists,
    split: Split,
    phase: Phase = "test",
    metrics: MetricsConfig | None = None,
    catalogue: np.ndarray | None = None,
) -> dict[str, float]:
    """All metrics of `metrics.ks` (names from metrics.metric_name), averaged over users.

    catalogue: the items coverage and Gini are measured over; default split.catalogue.
    Also reports "users" (how many were evaluated).
    """
    metrics = metrics or MetricsConfig()
    max_k = metrics.max_k
    truth_sets = split.truth(phase)
    users = truth_sets.user_ids
    history = split.history(phase)

    if isinstance(model, TopKLists):
        if model.k < max_k:
            raise ValueError(f"top-K lists hold {model.k} items per user; the metrics need {max_k}")
        topk = model.rows_for(users)[:, :max_k]
    else:
        model.fit(split.fit_data(phase))
        topk = np.asarray(model.recommend(users, max_k, history), dtype=np.int64)
        if topk.shape != (users.size, max_k):
            raise ValueError(f"{model.name}.recommend returned shape {topk.shape}, expected {(users.size, max_k)}")
    check_topk(topk, users, history)

    truth = truth_sets.rows(users)
    hits = m.hit_matrix(topk, truth)
    n_rel = truth.lengths()
    fit_data = split.fit_data(phase)
    pop_items, pop_counts = np.unique(fit_data["item_id"].to_numpy(np.int64), return_counts=True)
    catalogue = split.catalogue if catalogue is None else np.asarray(catalogue, dtype=np.int64)

    per_family: dict[str, Callable[[int], float]] = {
        "recall": lambda k: float(m.recall_at_k(hits, n_rel, k).mean()),
        "ndcg": lambda k: float(m.ndcg_at_k(hits, n_rel, k).mean()),
        "hit_rate": lambda k: float(m.hit_rate_at_k(hits, k).mean()),
        "mrr": lambda k: float(m.mrr_at_k(hits, k).mean()),
        "coverage": lambda k: m.coverage_at_k(topk, k, catalogue),
        "popularity": lambda k: m.mean_log_popularity(topk, k, pop_items, pop_counts),
        "gini": lambda k: m.gini_at_k(topk, k, catalogue),
    }
    result = {
        m.metric_name(family, k): per_family[family](k)
        for family in per_family
        for k in metrics.ks.get(family, ())
    }
    result["users"] = float(users.size)
    return result


def check_topk(topk: np.ndarray, user_ids: np.ndarray, history) -> None:
    """Raise if any row repeats an item or holds one of its user's history items."""
    valid = topk != PAD
    leaked = history.contains_pairs(np.asarray(user_ids, np.int64)[:, None], topk) & valid
    if leaked.any():
        r, c = np.argwhere(leaked)[0]
        raise ValueError(
            f"{int(leaked.sum())} recommended items are in their user's history, "
            f"e.g. user {int(user_ids[r])} item {int(topk[r, c])}"
        )
    ordered = np.sort(np.where(valid, topk, PAD), axis=1)
    if ((ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != PAD)).any():
        raise ValueError("a top-K list repeats an item")


def evaluate_all(
    models: Sequence[tuple[str, RecommenderFactory]],
    split: Split,
    phase: Phase = "test",
    metrics: MetricsConfig | None = None,
) -> pd.DataFrame:
    """One row per (name, factory): every metric plus `seconds` (fit + recommend + scoring)."""
    rows = {}
    for name, factory in models:
        start = time.perf_counter()
        row = evaluate(factory(), split, phase, metrics)
        row["seconds"] = time.perf_counter() - start
        rows[name] = row
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "model"
    if "users" in frame:
        frame["users"] = frame["users"].astype(np.int64)
    return frame


@dataclass(frozen=True)
class TuningResult:
    """The best grid value on the validation split, and every value's score."""

    best: object
    scores: dict
    metric: str


def tune_on_validation(
    make: Callable[[T], Recommender],
    grid: Sequence[T],
    split: Split,
    metrics: MetricsConfig | None = None,
) -> TuningResult:
    """Fit make(v) on train for each v, score on valid, keep the best by metrics.tuning_metric.

    Ties go to the earlier grid value. Only the validation phase is touched: test stays unseen.
    """
    metrics = metrics or MetricsConfig()
    if not grid:
        raise ValueError("empty grid")
    scores = {v: evaluate(make(v), split, "valid", metrics)[metrics.tuning_metric] for v in grid}
    best = max(grid, key=lambda v: scores[v])  # max keeps the first of equal scores
    return TuningResult(best=best, scores=scores, metric=metrics.tuning_metric)


def tune_ease(
    split: Split, config: EASEConfig | None = None, metrics: MetricsConfig | None = None
) -> tuple[EASEConfig, TuningResult]:
    """Pick λ from config.l2_grid on the validation split; returns the config with that λ."""
    config = config or EASEConfig()
    result = tune_on_validation(
        lambda l2: EASERecommender(_with(config, l2=l2)), config.l2_grid, split, metrics
    )
    return _with(config, l2=result.best), result


def tune_itemknn(
    split: Split, config: ItemKNNConfig | None = None, metrics: MetricsConfig | None = None
) -> tuple[ItemKNNConfig, TuningResult]:
    """Pick the neighbour count k from config.k_grid on the validation split (shrink fixed)."""
    config = config or ItemKNNConfig()
    result = tune_on_validation(
        lambda k: ItemKNNRecommender(_with(config, k=k)), config.k_grid, split, metrics
    )
    return _with(config, k=result.best), result


def _with(config: T, **changes) -> T:
    """A validated copy (model_copy(update=...) would skip the bounds)."""
    return type(config).model_validate({**config.model_dump(), **changes})


def to_markdown(frame: pd.DataFrame, digits: int = 4) -> str:
    """A GitHub markdown table of a metrics frame (index as the first column)."""
    header = [frame.index.name or ""] + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * len(frame.columns)) + "|"]
    floats = [pd.api.types.is_float_dtype(dtype) for dtype in frame.dtypes]
    for name, *values in frame.itertuples(name=None):
        cells = [f"{v:.{digits}f}" if is_float else str(v) for v, is_float in zip(values, floats)]
        lines.append("| " + " | ".join([str(name)] + cells) + " |")
    return "\n".join(lines)
