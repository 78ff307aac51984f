"""Cold start on MovieLens-100k: items the models never saw, published after training through the
same code path the served app uses, against popularity and against models trained with them.

    python benchmarks/cold_start.py [--resamples 1000]        # or: rayfeed bench cold-start

Protocol. T90 = the 90th percentile of rating time. Items first rated at or after T90 are
withheld from training with all their interactions. T_req = the median time of the ratings in
[T90, end]: the moment the feeds are asked for. New items: the withheld ones that exist by then
(first rated in [T90, T_req), each published at its first rating). Evaluated: each user who rates
a new item after T_req; their relevant items are those. Full ranking over all new items, the 20
best by each method's score.

  published (ours)   models trained on ratings < T90 without the new items; the new items are
                     published (app/freshness/published.py: content-only item-tower vector and
                     the ranker's content features), scored by the ranker's final score
  two-tower content  the same models, new items scored by the user embedding · content vector
  popularity         new items by their number of ratings in [T90, T_req) (what a trending
                     source knows at request time)
  trained with them  the same pipeline trained on ratings < T_req with the full catalogue: the
                     upper bound (the new items' early ratings are training data)

Recall@20 restricted to the new items, mean over users, with a bootstrap 95% interval over users.
Then full served-pipeline pages (20 items) for the same users at T_req from the published
models: the share of page slots taken by new items with the exploration slot on and off.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

K = 20


def recall_at_k(ranked: np.ndarray, relevant: list[set[int]]) -> np.ndarray:
    return np.array([len(set(row[:K].tolist()) & rel) / min(len(rel), K) for row, rel in zip(ranked, relevant)])


def bootstrap(values: np.ndarray, resamples: int, seed: int = 7) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def published_items(dataset, new_ids: np.ndarray, at: np.ndarray):
    """The withheld items as the item stream would carry them, each published when first rated."""
    from app.state.items import StreamedItem

    rows = dataset.items.set_index("item_id").loc[new_ids]
    return [StreamedItem(f"{k + 1}-0", k, k, {
        "item_id": int(item_id), "creator_id": int(row["creator_id"]), "created_at": None, "published_at": float(at[k]),
        "topics": list(row["topics"]), "content_rating": str(row["content_rating"]), "min_age": int(row["min_age"]),
        "title": str(row["title"])}) for k, (item_id, row) in enumerate(rows.iterrows())]


def rank_with_ranker(ranker, users: np.ndarray, now: float, catalogue: np.ndarray) -> np.ndarray:
    from app.ranking.features import RankingFeatureAssembler
    from app.ranking.scorer import MultiTaskScorer, top_k_all_items

    scorer = MultiTaskScorer.from_artifacts(ranker)
    return top_k_all_items(scorer, RankingFeatureAssembler(ranker.store), users, np.full(len(users), now),
                           [np.zeros(0, np.int64)] * len(users), catalogue, K)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rayfeed bench cold-start", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from app.data import load_dataset
    from app.freshness.published import ItemBase, PublishedItems
    from app.organic import OrganicPipeline
    from config import load_config
    from training.organic import fit_organic, production_split

    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    quiet = lambda msg: None  # noqa: E731
    config = load_config()
    dataset = load_dataset(config.data)
    ratings = dataset.interactions
    t90 = float(ratings["timestamp"].quantile(0.9))
    first = ratings.groupby("item_id")["timestamp"].min()
    new_ids = np.sort(first.index[first >= t90].to_numpy())
    t_req = float(ratings.loc[ratings["timestamp"] >= t90, "timestamp"].median())
    withheld = new_ids
    new_ids = np.sort(first.index[(first >= t90) & (first < t_req)].to_numpy())  # published by T_req
    later = ratings[(ratings["timestamp"] >= t_req) & ratings["item_id"].isin(new_ids)]
    relevant_by_user = later.groupby("user_id")["item_id"].apply(lambda s: set(s.tolist()))
    users = relevant_by_user.index.to_numpy()
    log(f"{len(new_ids)} new items, {len(users)} users rate them after T_req; training twice (minutes)")

    # Published: trained < T90 without the new items, then published.
    started = time.perf_counter()
    before = dataclasses.replace(dataset, items=dataset.items[~dataset.items["item_id"].isin(withheld)],
                                 interactions=ratings[ratings["timestamp"] < t90])
    history, labels = production_split(before.interactions, config.training.label_fraction)
    models = fit_organic(before, history, labels, config, use_ray=False, log=quiet)
    log(f"trained without the new items ({time.perf_counter() - started:.0f}s)")
    stream = PublishedItems().apply(published_items(dataset, new_ids, first.loc[new_ids].to_numpy()), caught_up=True)
    placed = stream.place(ItemBase.of(models.catalog.known, models.catalog.creator_id, None))
    serving = models.with_published(placed)
    warm = ratings[(ratings["timestamp"] >= t90) & (ratings["timestamp"] < t_req)].copy()
    warm["item_id"] = warm["item_id"].map(lambda i: placed.index_of.get(int(i), int(i)))
    serving.engagements.add(warm)  # the event stream between training and the request
    index_of = np.array([placed.index_of[int(i)] for i in new_ids])
    external_of = dict(zip(index_of.tolist(), new_ids.tolist()))
    relevant = [relevant_by_user[u] for u in users]

    rows: dict[str, np.ndarray] = {}
    ranked = rank_with_ranker(serving.ranker, users, t_req, index_of)
    rows["published, ranker (ours)"] = np.vectorize(lambda i: external_of.get(int(i), -1))(ranked)
    fresh = serving.fresh
    vectors = {u: serving.two_tower.user_embedding(int(u)) for u in users}
    content = np.stack([fresh.item_ids[np.argsort(-(fresh.vectors @ vectors[u]))][:K] if vectors[u] is not None
                        else fresh.item_ids[:K] for u in users])
    rows["published, two-tower content vector"] = np.vectorize(lambda i: external_of.get(int(i), -1))(content)
    popular = warm[warm["item_id"].isin(index_of)]["item_id"].value_counts()
    by_count = [external_of[int(i)] for i in popular.index] + [int(i) for i in new_ids
                                                              if placed.index_of[int(i)] not in popular.index]
    rows["popularity among new items at T_req"] = np.tile(np.array(by_count[:K]), (len(users), 1))

    # Upper bound: the same pipeline trained < T_req with the full catalogue.
    started = time.perf_counter()
    upto = dataclasses.replace(dataset, interactions=ratings[ratings["timestamp"] < t_req])
    history, labels = production_split(upto.interactions, config.training.label_fraction)
    bound = fit_organic(upto, history, labels, config, use_ray=False, log=quiet)
    log(f"trained with them ({time.perf_counter() - started:.0f}s)")
    rows["trained with them (upper bound)"] = rank_with_ranker(bound.ranker, users, t_req, new_ids)

    figures: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "new_items": int(len(new_ids)), "users": int(len(users)), "t90": t90, "t_req": t_req, "recall_at_20": {}}
    for name, ranked_ids in rows.items():
        values = recall_at_k(ranked_ids, relevant)
        low, high = bootstrap(values, args.resamples)
        figures["recall_at_20"][name] = {"mean": round(float(values.mean()), 4), "ci95": [round(low, 4), round(high, 4)]}

    # Page impressions of new items, exploration slot on and off (the served pipeline, in process).
    shares = {}
    for label, max_items in (("exploration on", config.reranking.exploration.max_items), ("exploration off", 0)):
        cfg = config.model_copy(update={"reranking": config.reranking.model_copy(update={
            "exploration": config.reranking.exploration.model_copy(update={"max_items": max_items})})})
        pipeline = OrganicPipeline(serving, cfg)
        slots = new = 0
        for user in users:
            page = pipeline.run(serving.query(int(user), now=t_req, limit=K)).candidates.item_ids[:K]
            slots, new = slots + len(page), new + int(np.isin(page, index_of).sum())
        shares[label] = round(new / max(slots, 1), 4)
    figures["new_item_share_of_page_slots"] = shares
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
