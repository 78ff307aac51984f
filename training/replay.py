"""`rayfeed replay`: a time-ordered replay of the interactions through every freshness strategy.

The base two-tower trains (in process, the same `fit` loop as Ray Train runs) on the oldest
`freshness.replay.base_fraction` of interactions; the rest is cut into fixed windows and
replayed prequentially (app/freshness/prequential.py): every strategy recommends before a window
and updates after it, all on the same windows in one run. The first windows teach the ensemble
its per-context weights; the table, plot and per-window figures cover the later windows only.

Outputs under OUT: per_window.csv, per_user.csv, summary.json, table.md, replay.png.

Example:
    rayfeed replay --out runs/replay            # MovieLens-100k, ~5 min on one core
    rayfeed replay --quick --out /tmp/replay    # a few windows, tiny model (tests, smoke)
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from config import RayfeedConfig
from app.data.tables import Dataset
from app.freshness.config import FreshnessConfig
from app.freshness.ensemble import ContextEnsembleStrategy
from app.freshness.log import InteractionLog
from app.freshness.prequential import bucket_table, replay_windows, run_replay, summarise
from app.freshness.strategies import (
    DynamicEmbeddingStrategy,
    MicrobatchRegularisedStrategy,
    NaiveIncrementalStrategy,
    StaticStrategy,
    Strategy,
)
from app.freshness.towers import TowerSnapshot
from app.retrieval.two_tower import train_two_tower_in_process

Log = Callable[[str], None]
ENSEMBLE = "ensemble"

# `--quick`: a handful of windows and a small model, for tests and a smoke run (seconds).
QUICK_OVERRIDES: dict[str, Any] = {
    "retrieval": {"two_tower": {"epochs": 2, "embedding_dim": 16, "id_dim": 16, "hidden_dim": 32,
                                "feature_dim": 4, "history_length": 10}},
    "freshness": {
        "replay": {"validation_windows": 2, "max_windows": 6, "bootstrap_samples": 200},
        "naive": {"epochs": 2},
        "microbatch": {"epochs": 1, "replay_sample": 1000},
    },
}


def split_timeline(interactions: pd.DataFrame, base_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(base period, later events, first timestamp after the base): the cut falls between two
    distinct timestamps, so no second is split across the two parts."""
    ordered = interactions.sort_values(["timestamp", "user_id", "item_id"], kind="stable", ignore_index=True)
    timestamps = ordered["timestamp"].to_numpy(np.float64)
    cut = timestamps[min(int(base_fraction * len(ordered)), len(ordered) - 1)]
    later = timestamps >= cut
    if later.all() or not later.any():
        raise ValueError(f"base_fraction {base_fraction} leaves no base period or no replay")
    return ordered[~later].reset_index(drop=True), ordered[later].reset_index(drop=True), float(cut)


def ensemble_member(name: str, config: FreshnessConfig) -> str | None:
    """The dynamic member of an ensemble strategy name ("ensemble" uses the configured one,
    "ensemble:<member>" names it); None for a strategy that is not an ensemble."""
    if name == ENSEMBLE:
        return config.ensemble.dynamic_member
    if name.startswith(f"{ENSEMBLE}:"):
        return name.split(":", 1)[1]
    return None


def build_strategies(base: TowerSnapshot, log: InteractionLog, base_period: pd.DataFrame,
                     config: FreshnessConfig) -> dict[str, Strategy]:
    """The strategies named in `config.strategies`, in that order. An ensemble reuses the static
    and dynamic-member instances, which must be listed before it (each is observed once)."""
    makers: dict[str, Callable[[], Strategy]] = {
        "static": lambda: StaticStrategy(base, log, base_period),
        "dynamic_embeddings": lambda: DynamicEmbeddingStrategy(base, log),
        "naive_incremental": lambda: NaiveIncrementalStrategy(base, log, config.naive),
        "microbatch_regularised": lambda: MicrobatchRegularisedStrategy(
            base, log, base_period, config.microbatch, config.replay.seed),
    }
    built: dict[str, Strategy] = {}
    for name in config.strategies:
        member = ensemble_member(name, config)
        if member is None and name not in makers:
            raise ValueError(f"freshness.strategies: unknown {name!r}; known {sorted(makers)}, "
                             f"{ENSEMBLE}, {ENSEMBLE}:<member>")
        if member is None:
            built[name] = makers[name]()
            continue
        missing = [n for n in ("static", member) if n not in built]
        if missing:
            raise ValueError(f"freshness.strategies: {name} needs {missing} listed before it")
        built[name] = ContextEnsembleStrategy(built["static"], built[member], log, config.ensemble, name=name)
    return built


@dataclass
class ReplayResult:
    per_window: pd.DataFrame
    per_user: pd.DataFrame
    summary: pd.DataFrame
    buckets: pd.DataFrame
    weights: dict[str, dict[str, float]]  # per ensemble: dynamic weight per context bucket
    meta: dict[str, Any] = field(default_factory=dict)


def run(dataset: Dataset, config: RayfeedConfig, log: Log = print) -> ReplayResult:
    fresh = config.freshness
    started = time.perf_counter()
    torch.set_num_threads(config.retrieval.two_tower.torch_threads)
    base_period, later, start = split_timeline(dataset.interactions, fresh.replay.base_fraction)
    log(f"{dataset.name}: base period {len(base_period)} interactions until "
        f"{pd.to_datetime(start, unit='s')}, {len(later)} to replay")
    artifacts = train_two_tower_in_process(dataset, base_period, config.retrieval.two_tower, on_epoch=None)
    log(f"base two-tower trained ({time.perf_counter() - started:.0f}s)")
    base = TowerSnapshot.from_artifacts(artifacts, base_period)
    event_log = InteractionLog(base_period, as_of=start)
    strategies = build_strategies(base, event_log, base_period, fresh)
    windows = replay_windows(later, start, fresh.replay)
    log(f"{len(windows)} windows of {fresh.replay.window_s / 86_400:g} days "
        f"({sum(w.phase == 'valid' for w in windows)} validation); strategies: {', '.join(strategies)}")
    per_window, per_user = run_replay(
        strategies, event_log, windows, fresh.replay, fresh.ensemble.recent_activity_s, progress=log
    )
    reference = fresh.strategies[0]
    return ReplayResult(
        per_window=per_window,
        per_user=per_user,
        summary=summarise(per_window, reference, fresh.replay),
        buckets=bucket_table(per_user),
        weights={n: dict(s.weights) for n, s in strategies.items() if isinstance(s, ContextEnsembleStrategy)},
        meta={
            "dataset": dataset.name, "reference": reference, "k": fresh.replay.k,
            "windows": len(windows), "validation_windows": fresh.replay.validation_windows,
            "base_interactions": len(base_period), "replayed_interactions": len(later),
            "seconds": round(time.perf_counter() - started, 1),
            "freshness": fresh.model_dump(mode="json"),
            "two_tower": config.retrieval.two_tower.model_dump(mode="json"),
        },
    )


def format_table(result: ReplayResult) -> str:
    """The markdown table: per strategy over the test windows, and the paired differences."""
    k, ref = result.meta["k"], result.meta["reference"]
    lines = [
        f"| strategy | Recall@{k} mean ± std | worst window | windows below {ref} | mean abs. change between windows "
        f"| NDCG@{k} mean ± std | worst window | ΔRecall vs {ref} [95% CI] | ΔNDCG vs {ref} [95% CI] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result.summary.to_dict("records"):
        lines.append(
            f"| {r['strategy']} | {r['recall_mean']:.4f} ± {r['recall_std']:.4f} | {r['recall_worst']:.4f} "
            f"| {r['recall_below']}/{r['windows']} | {r['recall_step']:.4f} "
            f"| {r['ndcg_mean']:.4f} ± {r['ndcg_std']:.4f} | {r['ndcg_worst']:.4f} "
            f"| {r['recall_diff']:+.4f} [{r['recall_diff_low']:+.4f}, {r['recall_diff_high']:+.4f}] "
            f"| {r['ndcg_diff']:+.4f} [{r['ndcg_diff_low']:+.4f}, {r['ndcg_diff_high']:+.4f}] |"
        )
    return "\n".join(lines)


def format_buckets(result: ReplayResult) -> str:
    """Recall@k per context bucket (users pooled over the test windows)."""
    k = result.meta["k"]
    users = result.buckets.attrs.get("users", {})
    buckets = [b for b in ("new", "recent", "returning") if f"recall_{b}" in result.buckets]
    lines = ["| strategy | " + " | ".join(f"Recall@{k} {b} ({users.get(b, 0)} users)" for b in buckets) + " |",
             "|---|" + "---|" * len(buckets)]
    for r in result.buckets.to_dict("records"):
        lines.append(f"| {r['strategy']} | " + " | ".join(f"{r[f'recall_{b}']:.4f}" for b in buckets) + " |")
    return "\n".join(lines)


def plot(result: ReplayResult, path: Path) -> None:
    """Recall@k and NDCG@k per window (at its midpoint) per strategy; the validation windows shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = result.meta["k"]
    frame = result.per_window.assign(date=lambda f: pd.to_datetime((f["start"] + f["end"]) / 2, unit="s"))
    fig, axes = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for ax, metric, label in zip(axes, ("recall", "ndcg"), (f"Recall@{k}", f"NDCG@{k}")):
        for strategy, rows in frame.groupby("strategy", sort=False):
            ax.plot(rows["date"], rows[metric], marker="o", markersize=3, label=strategy)
        valid = frame[frame["phase"] == "valid"]
        if len(valid):
            ax.axvspan(pd.to_datetime(valid["start"].min(), unit="s"), pd.to_datetime(valid["end"].max(), unit="s"),
                       color="grey", alpha=0.15,
                       label="validation (ensemble weights)" if metric == "recall" else None)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(f"Prequential replay of {result.meta['dataset']}: each window scored before the strategy sees it")
    axes[0].legend(fontsize=8, ncol=3)
    axes[1].set_xlabel("window (midpoint)")
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(result: ReplayResult, out: Path, command: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    result.per_window.to_csv(out / "per_window.csv", index=False)
    result.per_user.to_csv(out / "per_user.csv", index=False)
    summary = {"command": command, "meta": result.meta, "weights": result.weights,
               "summary": result.summary.to_dict("records"), "buckets": result.buckets.to_dict("records"),
               "bucket_users": result.buckets.attrs.get("users", {})}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float))
    (out / "table.md").write_text(f"`{command}`\n\n{format_table(result)}\n\n{format_buckets(result)}\n\n"
                                  f"ensemble weights (dynamic share per context, learned on validation): {result.weights}\n")
    plot(result, out / "replay.png")
