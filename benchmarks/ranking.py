"""Ranking benchmarks: scoring latency (single request vs a batch of 16) and offline quality.

    python benchmarks/ranking.py latency [--artifacts DIR] [--device cpu|cuda] [--candidates 500,5000]
                                         [--item-table] [--repeats 30]
    python benchmarks/ranking.py quality [--ray] [--artifacts-out DIR]

latency: 500 candidates per request by default (MovieLens-100k feature tables, `src_*` columns
  present), timing features + model and model only, for one request and for a batch of 16 requests
  scored in one tensor pass; with torch threads = 1 and the default. Latency does not depend on
  the weights, so without --artifacts an untrained model of the default architecture is used.
  More candidates than the catalogue's 1682 items (the cascade's 5000) repeat items: the work
  per candidate is the same.
quality: per-user temporal split 80/10/10 (app.evaluation); EASE with λ tuned on valid; the
  ranker trained on the validation period (features from train) and ranking, for test, every
  item outside the user's train+valid history with features recomputed from train+valid.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.data import DataConfig, load_dataset  # noqa: E402
from app.pipeline.candidates import Candidates, FeedQuery  # noqa: E402
from app.ranking import (  # noqa: E402
    FeatureStore,
    MultiTaskScorer,
    RankerArtifacts,
    RankingConfig,
    RankingFeatureAssembler,
    ScoreWeights,
    build_model,
    top_k_all_items,
)

BATCH = 16
ITEM_TABLE_REFRESH_S = 3600.0  # one table serves every timed request (they share the snapshot's time)


def _requests(
    store: FeatureStore, n: int, n_candidates: int, rng: np.random.Generator
) -> list[tuple[FeedQuery, Candidates]]:
    catalogue = np.arange(1, store.n_item_slots)
    out = []
    for _ in range(n):
        items = rng.choice(catalogue, size=n_candidates, replace=n_candidates > len(catalogue))
        cands = Candidates.from_source("ann", items, rng.random(n_candidates)).with_features({
            "src_ann": rng.random(n_candidates).astype(np.float32),
            "src_coengagement": rng.random(n_candidates).astype(np.float32),
            "n_sources": rng.integers(1, 3, n_candidates).astype(np.float32),
        })
        out.append((FeedQuery(user_id=int(rng.integers(1, 944)), now=store.as_of), cands))
    return out


def _median_ms(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def latency(args: argparse.Namespace) -> None:
    if args.artifacts:
        artifacts = RankerArtifacts.load(args.artifacts)
        store, model, config = artifacts.store, artifacts.model, artifacts.config
    else:
        ds = load_dataset(DataConfig())
        config = RankingConfig()
        store = FeatureStore.build(ds.interactions, ds.items, ds.users, config.features)
        model = build_model(config, store.schema()).eval()
    # With --item-table the item-only features come from the serving table (built first, as a
    # replica's is after its first request); "features+model" then times what a replica runs.
    assembler = RankingFeatureAssembler(store, ITEM_TABLE_REFRESH_S if args.item_table else 0.0)
    if args.item_table:
        store.item_table.rows_for(np.array([store.as_of - store.origin]), ITEM_TABLE_REFRESH_S)
        store.item_table.wait(600)
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rng = np.random.default_rng(0)
    default_threads = torch.get_num_threads()
    print(f"ranking latency: batch of {BATCH}, median of {args.repeats}, item-only features "
          f"{'from the item table' if args.item_table else 'computed per candidate'}")
    print(f"{'cands':>6} {'device':6} {'threads':>7} {'path':16} {'1 req ms':>9} {'16 req ms':>10} "
          f"{'ms/req @16':>11} {'speed-up':>9}")
    for n_candidates in args.candidates:
        single, batch = _requests(store, 1, n_candidates, rng), _requests(store, BATCH, n_candidates, rng)
        for device in devices:
            scorer = MultiTaskScorer(model, config.weights, assembler, device=device)
            for threads in sorted({1, default_threads}):
                torch.set_num_threads(threads)
                f1, f16 = scorer.features_for(single), scorer.features_for(batch)
                paths = {
                    "features+model": (lambda: scorer.score_batch(single), lambda: scorer.score_batch(batch)),
                    "model only": (lambda: scorer.predict(f1), lambda: scorer.predict(f16)),
                }
                for path, (one, many) in paths.items():
                    t1, t16 = _median_ms(one, args.repeats), _median_ms(many, args.repeats)
                    print(f"{n_candidates:6d} {device:6} {threads:7d} {path:16} {t1:9.2f} {t16:10.2f} "
                          f"{t16 / BATCH:11.2f} {t1 * BATCH / t16:8.1f}x", flush=True)
    torch.set_num_threads(default_threads)


def quality(args: argparse.Namespace) -> None:
    from app.evaluation import EASERecommender, TopKLists, evaluate, temporal_split, tune_ease
    from training.ranker import fit_ranker

    ds = load_dataset(DataConfig())
    split = temporal_split(ds.interactions)
    report = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
    start = time.perf_counter()
    ease_config, tuning = tune_ease(split)
    ease = evaluate(EASERecommender(ease_config), split, "test")
    print(f"EASE λ={ease_config.l2:g} (tuned on valid {tuning.metric}) in {time.perf_counter() - start:.1f}s")

    start = time.perf_counter()
    config = RankingConfig()
    test_history = split.fit_data("test")
    artifacts = fit_ranker(split.train, split.valid, ds.items, ds.users, config, serving_history=test_history,
                           use_ray=args.ray, artifact_dir=args.artifacts_out)
    print(f"ranker trained in {time.perf_counter() - start:.1f}s ({'Ray Train' if args.ray else 'in-process'})")

    assembler = RankingFeatureAssembler(artifacts.store)
    scorer = MultiTaskScorer(artifacts.model, config.weights, assembler, device="cpu")
    truth_users = split.truth("test").user_ids
    history = split.history("test")
    # Request time of each user's test feed: their latest known activity (end of train+valid).
    now = test_history.groupby("user_id")["timestamp"].max().reindex(truth_users).to_numpy(np.float64)
    exclude = [history.items_of(u) for u in truth_users]
    catalogue = ds.items["item_id"].to_numpy(np.int64)
    rows = {"EASE": ease}
    for label, weights in (("ranker (default weights)", config.weights),
                           ("ranker (P(click) only)", ScoreWeights(like=0, share=0, hide=0, watch=0))):
        scorer.reconfigure(weights)
        start = time.perf_counter()
        topk = top_k_all_items(scorer, assembler, truth_users, now, exclude, catalogue, k=50)
        rows[label] = evaluate(TopKLists(truth_users, topk), split, "test")
        print(f"{label}: ranked {len(truth_users)} users x all unseen items in {time.perf_counter() - start:.1f}s")
    print(f"\nML-100k test ({len(truth_users)} users, full ranking excluding train+valid history)")
    print(f"{'model':28}" + "".join(f"{m:>11}" for m in report))
    for name, row in rows.items():
        print(f"{name:28}" + "".join(f"{row[m]:11.4f}" for m in report))
    ranker = rows["ranker (default weights)"]
    print("ranker vs EASE: " + ", ".join(f"{m} {ranker[m] / ease[m] - 1:+.1%}" for m in ("recall@20", "ndcg@20")))


def _counts(text: str) -> list[int]:
    counts = [int(part) for part in text.split(",") if part.strip()]
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"expected positive counts such as 500,5000, got {text!r}")
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    lat = sub.add_parser("latency", help="scoring latency, single request vs batch of 16")
    lat.add_argument("--artifacts", type=Path, default=None, help="a saved ranker (default: untrained model)")
    lat.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cpu, and cuda when present")
    lat.add_argument("--candidates", type=_counts, default=[500], help="candidates per request, e.g. 500,5000")
    lat.add_argument("--item-table", action="store_true",
                     help="item-only features from the serving table (ItemFeatureTable), as a replica reads them")
    lat.add_argument("--repeats", type=int, default=30)
    qual = sub.add_parser("quality", help="ranker vs EASE on the ML-100k temporal test split")
    qual.add_argument("--ray", action="store_true", help="train through Ray Train (TorchTrainer)")
    qual.add_argument("--artifacts-out", type=Path, default=None, help="save the trained ranker here")
    args = parser.parse_args(argv)
    {"latency": latency, "quality": quality}[args.command](args)


if __name__ == "__main__":
    main()
