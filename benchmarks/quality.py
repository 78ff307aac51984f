"""Offline quality of every model on MovieLens-100k: one markdown table on the test split.

    python benchmarks/quality.py [--no-pipeline] [--use-ray]

Protocol (app/evaluation): per-user temporal split 80/10/10; hyper-parameters (EASE λ, ItemKNN k)
chosen on the validation split (fit on train); reported figures fit on train+valid and score the
test split, full ranking over every item with the user's train+valid history excluded.
To add a model, append a (name, factory) pair to the list `models` builds.

The organic pipeline rows train exactly what `rayfeed train` trains (training/organic.py):
two-tower on train, ranker on the retrieval candidates with the validation interactions as
labels, serving state rebased on train+valid; then every test user gets a page.
  * "Two-tower" scores every item by exact inner product (the model, not the ANN index);
  * "Organic: retrieval + ranking" is the ranker's top-K;
  * "Organic: full pipeline" adds reranking (MMR diversity and the creator cap), i.e. what is served,
    with the ranking cascade on (the pre-ranker passes `ranking.cascade.keep` candidates to the DCN)
    and, from the same fitted models, off;
  * "... without cf_score" drops the ranker's EASE-formula feature (an ablation).
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

def organic_models(split: Split, use_ray: bool, log: Callable[[str], None]) -> list[tuple[str, RecommenderFactory]]:
    from config import load_config
    from app.data import load_dataset
    from app.retrieval.recommender import TwoTowerRecommender
    from training.eval_topk import OrganicRecommender

    config = load_config()
    dataset = load_dataset(config.data)
    quiet = lambda message: None  # noqa: E731 - training progress would drown the table
    pipeline = OrganicRecommender(dataset, config, labels=split.valid, use_ray=use_ray, log=quiet, name="organic")
    no_cf = config.model_copy(update={"ranking": config.ranking.model_copy(
        update={"features": config.ranking.features.model_copy(update={"cf_max_items": 0})})})
    ablation = OrganicRecommender(dataset, no_cf, labels=split.valid, use_ray=use_ray, log=quiet, name="no-cf")
    no_cascade = config.model_copy(update={"ranking": config.ranking.model_copy(
        update={"cascade": config.ranking.cascade.model_copy(update={"enabled": False})})})
    keep = config.ranking.cascade.keep
    return [
        ("Two-tower (retrieval model alone)", lambda: TwoTowerRecommender(dataset, config.retrieval.two_tower)),
        ("Organic: retrieval + ranking", lambda: pipeline),
        (f"Organic: full pipeline (+ MMR, creator cap), cascade on (pre-ranker keeps {keep})",
         lambda: pipeline.at_stage("reranking", "organic-full")),
        ("Organic: full pipeline, cascade off (the DCN ranks every candidate)",
         lambda: pipeline.served_with(no_cascade, "organic-no-cascade").at_stage("reranking", "organic-full-no-cascade")),
        ("Organic: retrieval + ranking without cf_score", lambda: ablation),
        *contract_models(dataset, config, split, use_ray, quiet),
    ]


def contract_models(built_in, config, split: Split, use_ray: bool, log) -> list[tuple[str, RecommenderFactory]]:
    """The same pipeline on the same data exported to the table contract with string ids (u42,
    m50) and read back through it (`data.dataset: tables`): a row that must match the built-in one."""
    import tempfile

    from app.data.export import export_dataset
    from app.data.loading import load_tables
    from training.eval_topk import MappedRecommender, OrganicRecommender

    directory = tempfile.mkdtemp(prefix="rayfeed-contract-")
    export_dataset(built_in, directory, string_ids=True)
    data = config.data.model_copy(update={"dataset": "tables", "tables": config.data.tables.model_copy(
        update={"uri": directory, "name": "movielens-100k-contract"})})
    dataset = load_tables(data)
    ids = dataset.ids
    prefix = {"users": "u", "items": "m"}

    def to_internal(kind: str, values: np.ndarray) -> np.ndarray:
        return getattr(ids, kind).to_internal(f"{prefix[kind]}{int(v)}" for v in values)

    def to_split_items(internal: np.ndarray) -> np.ndarray:
        return np.asarray([int(str(e)[1:]) for e in ids.items.to_external(internal)], np.int64)

    labels = split.valid.assign(user_id=to_internal("users", split.valid["user_id"].to_numpy()),
                                item_id=to_internal("items", split.valid["item_id"].to_numpy()))
    inner = OrganicRecommender(dataset, config.model_copy(update={"data": data}), labels=labels, use_ray=use_ray,
                               log=log, name="organic-contract")
    full = MappedRecommender(inner.at_stage("reranking", "organic-contract-full"), to_internal, to_split_items,
                             "organic-contract-full")
    return [("Organic: full pipeline, data through the contract (string ids)", lambda: full)]


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
    ]


def _grid(scores: dict) -> str:
    return ", ".join(f"{k:g}={v:.4f}" for k, v in scores.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-pipeline", action="store_true", help="baselines only (seconds, not minutes)")
    parser.add_argument("--use-ray", action="store_true", help="train the pipeline with Ray Train (as `rayfeed train`)")
    args = parser.parse_args()
    from app.data import DataConfig, load_dataset

    config = EvaluationConfig()
    start = time.perf_counter()
    interactions = load_dataset(DataConfig()).interactions
    split = temporal_split(interactions, config.split)
    print(f"ML-100k: {len(interactions)} interactions, {interactions.user_id.nunique()} users, "
          f"{interactions.item_id.nunique()} items; split train/valid/test = "
          f"{len(split.train)}/{len(split.valid)}/{len(split.test)}")
    candidates = models(split, config, print)
    if not args.no_pipeline:
        candidates += organic_models(split, args.use_ray, print)
    table = evaluate_all(candidates, split, "test", config.metrics)
    print()
    print(to_markdown(table))
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
