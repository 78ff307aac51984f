"""Offline quality of every model on MovieLens-100k: one markdown table on the test split.

    python benchmarks/quality.py [--ratings PATH]

Protocol (app/evaluation): per-user temporal split 80/10/10; hyper-parameters (EASE λ, ItemKNN k)
chosen on the validation split (fit on train); reported figures fit on train+valid and score the
test split, full ranking over every item with the user's train+valid history excluded.
To add a model, append a (name, factory) pair to the list `models` builds.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the benchmark host is shared

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from app.evaluation import (  # noqa: E402
    EASERecommender,
    EvaluationConfig,
    ItemKNNRecommender,
    PopularityRecommender,
    RecommenderFactory,
    Split,
    evaluate_all,
    temporal_split,
    to_markdown,
    tune_ease,
    tune_itemknn,
)

RAW_RATINGS = Path("/tmp/rb/recbole/dataset_example/ml-100k/ml-100k.inter")


def load_ml100k_inter(path: Path = RAW_RATINGS) -> pd.DataFrame:
    """The RecBole copy of ML-100k ratings (tab-separated, typed header) as the interactions schema."""
    raw = pd.read_csv(path, sep="\t")
    raw.columns = [c.split(":")[0] for c in raw.columns]
    return pd.DataFrame({
        "user_id": raw["user_id"].astype(np.int64),
        "item_id": raw["item_id"].astype(np.int64),
        "rating": raw["rating"].astype(np.float32),
        "timestamp": raw["timestamp"].astype(np.int64),
    })


def models(split: Split, config: EvaluationConfig, log: Callable[[str], None]) -> list[tuple[str, RecommenderFactory]]:
    """Every benchmarked model as (row name, factory); tuning happens here, on validation only."""
    ease_config, ease_tuning = tune_ease(split, config.ease, config.metrics)
    log(f"EASE λ on valid ({ease_tuning.metric}): " + _grid(ease_tuning.scores) + f" -> {ease_config.l2:g}")
    knn_config, knn_tuning = tune_itemknn(split, config.itemknn, config.metrics)
    log(f"ItemKNN k on valid ({knn_tuning.metric}): " + _grid(knn_tuning.scores) + f" -> {knn_config.k}")
    return [
        ("Pop", PopularityRecommender),
        (f"ItemKNN (k={knn_config.k}, shrink={knn_config.shrink:g})", lambda: ItemKNNRecommender(knn_config)),
        (f"EASE (λ={ease_config.l2:g})", lambda: EASERecommender(ease_config)),
        # The lead adds: ("Two-tower", ...), ("Full pipeline", ...) — factories of Recommenders.
    ]


def _grid(scores: dict) -> str:
    return ", ".join(f"{k:g}={v:.4f}" for k, v in scores.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=Path, default=RAW_RATINGS)
    args = parser.parse_args()
    config = EvaluationConfig()
    start = time.perf_counter()
    interactions = load_ml100k_inter(args.ratings)
    split = temporal_split(interactions, config.split)
    print(f"ML-100k: {len(interactions)} interactions, {interactions.user_id.nunique()} users, "
          f"{interactions.item_id.nunique()} items; split train/valid/test = "
          f"{len(split.train)}/{len(split.valid)}/{len(split.test)}")
    table = evaluate_all(models(split, config, print), split, "test", config.metrics)
    print()
    print(to_markdown(table))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
