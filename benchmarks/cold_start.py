"""Cold start on MovieLens-100k: items the models never saw, published after training through the
same code path the served app uses, against popularity and against a pipeline trained with them.

    python benchmarks/cold_start.py [--resamples 1000]        # or: rayfeed bench cold-start

Protocol. T90 = the 90th percentile of rating time. New items: first rated at or after T90
(45 films, 128 ratings by 47 users); withheld from training with all their interactions, and
published at T90. The users who rate a new item are split in two halves (by user id parity):
the evaluated half, and the half whose new-item ratings the upper bound may train on. Per
evaluated user, the request is at their first rating of a new item (t_u); relevant: every new
item they rate. Each method ranks all new items for the user; Recall@K restricted to new items
(K = 20, and 5: 20 is almost half of the 45), mean over users, bootstrap 95% interval over users.

  published (ours)   trained on ratings < T90 without the new items; the new items published
                     (app/freshness/published.py): the ranker's final score over their content
                     features (topic and creator affinity, year, rating)
  ... as served       the same ranker given what retrieval hands it in the app: `src_ann`, the
                     content vector's cosine with the user (the row above passes no source score)
  two-tower content  the same, by user embedding · content-only item-tower vector
  popularity         new items by their ratings before t_u (what trending knows then)
  trained with them  ratings < T90 plus the other half's new-item ratings, full catalogue: the
                     upper bound (the new items have trained id rows and counts)

Then served-pipeline pages (20 items) for the evaluated users an hour after publication, from
the published models: the share of page slots that new items take, exploration slot on and off.
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

K = 20


def recall_at_k(ranked: np.ndarray, relevant: list[set[int]], k: int = K) -> np.ndarray:
    return np.array([len(set(row[:k].tolist()) & rel) / min(len(rel), k) for row, rel in zip(ranked, relevant)])


def bootstrap(values: np.ndarray, resamples: int, seed: int = 7) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = [values[rng.integers(0, len(values), len(values))].mean() for _ in range(resamples)]
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def published_items(dataset, new_ids: np.ndarray, at: np.ndarray):
    """The withheld items as the item stream would carry them, published at `at` (per item)."""
    from app.state.items import StreamedItem

    rows = dataset.items.set_index("item_id").loc[new_ids]
    return [StreamedItem(f"{k + 1}-0", k, k, {
        "item_id": int(item_id), "creator_id": int(row["creator_id"]), "created_at": None, "published_at": float(at[k]),
        "topics": list(row["topics"]), "content_rating": str(row["content_rating"]), "min_age": int(row["min_age"]),
        "title": str(row["title"])}) for k, (item_id, row) in enumerate(rows.iterrows())]


def rank_with_ranker(ranker, users: np.ndarray, now: np.ndarray, catalogue: np.ndarray) -> np.ndarray:
    from app.ranking.features import RankingFeatureAssembler
    from app.ranking.scorer import MultiTaskScorer, top_k_all_items

    scorer = MultiTaskScorer.from_artifacts(ranker)
    return top_k_all_items(scorer, RankingFeatureAssembler(ranker.store), users, now,
                           [np.zeros(0, np.int64)] * len(users), catalogue, K)


def rank_as_served(serving, users: np.ndarray, now: np.ndarray, fresh) -> np.ndarray:
    """The ranker's final score with what retrieval hands it in the served app: a published item
    found by EmbeddingAnnSource carries `src_ann` = its content vector's cosine with the user."""
    from app.ranking.features import RankingFeatureAssembler
    from app.ranking.scorer import MultiTaskScorer

    scorer = MultiTaskScorer.from_artifacts(serving.ranker)
    assembler = RankingFeatureAssembler(serving.ranker.store)
    out = []
    for user, t in zip(users, now):
        vector = serving.two_tower.user_embedding(int(user))
        cosine = fresh.vectors @ vector if vector is not None else np.zeros(len(fresh), np.float32)
        batch = assembler.batch(np.int64(user), fresh.item_ids, t,
                                {"src_ann": cosine, "n_sources": np.ones(len(fresh), np.float32)})
        out.append(fresh.item_ids[np.argsort(-scorer.predict(batch)["final"], kind="stable")][:K])
    return np.stack(out)


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
    on_new = ratings[ratings["item_id"].isin(new_ids)]
    raters = np.sort(on_new["user_id"].unique())
    users, teachers = raters[raters % 2 == 0], raters[raters % 2 == 1]
    t_u = on_new.groupby("user_id")["timestamp"].min().loc[users].to_numpy(np.float64)
    relevant = [set(on_new.loc[on_new["user_id"] == u, "item_id"].tolist()) for u in users]
    log(f"{len(new_ids)} new items, {len(on_new)} ratings of them; {len(users)} users evaluated; training twice")

    # Published: trained < T90 without the new items, then published at T90.
    started = time.perf_counter()
    before = dataclasses.replace(dataset, items=dataset.items[~dataset.items["item_id"].isin(new_ids)],
                                 interactions=ratings[ratings["timestamp"] < t90])
    history, labels = production_split(before.interactions, config.training.label_fraction)
    models = fit_organic(before, history, labels, config, use_ray=False, log=quiet)
    log(f"trained without the new items ({time.perf_counter() - started:.0f}s)")
    stream = PublishedItems().apply(published_items(dataset, new_ids, np.full(len(new_ids), t90)), caught_up=True)
    placed = stream.place(ItemBase.of(models.catalog.known, models.catalog.creator_id, None))
    serving = models.with_published(placed)
    index_of = np.array([placed.index_of[int(i)] for i in new_ids])
    external = np.vectorize(dict(zip(index_of.tolist(), new_ids.tolist())).get)

    rows: dict[str, np.ndarray] = {}
    rows["published, ranker (ours)"] = external(rank_with_ranker(serving.ranker, users, t_u, index_of))
    fresh = serving.fresh
    content = []
    for u in users:
        vector = serving.two_tower.user_embedding(int(u))
        order = np.argsort(-(fresh.vectors @ vector)) if vector is not None else np.arange(len(fresh))
        content.append(fresh.item_ids[order][:K])
    rows["published, two-tower content vector"] = external(np.stack(content))
    rows["published, ranker with the retrieval score (as served)"] = external(
        rank_as_served(serving, users, t_u, fresh))
    popularity = []
    for t in t_u:
        counts = on_new[on_new["timestamp"] < t]["item_id"].value_counts()
        popularity.append(np.array([*counts.index.tolist(), *[i for i in new_ids if i not in counts.index]][:K]))
    rows["popularity among new items at t_u"] = np.stack(popularity)

    started = time.perf_counter()
    taught = ratings[(ratings["timestamp"] < t90) | (ratings["item_id"].isin(new_ids) & ratings["user_id"].isin(teachers))]
    upto = dataclasses.replace(dataset, interactions=taught)
    history, labels = production_split(upto.interactions, config.training.label_fraction)
    bound = fit_organic(upto, history, labels, config, use_ray=False, log=quiet)
    log(f"trained with them ({time.perf_counter() - started:.0f}s)")
    rows["trained with them (upper bound)"] = rank_with_ranker(bound.ranker, users, t_u, new_ids)

    figures: dict[str, object] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "new_items": int(len(new_ids)), "users_evaluated": int(len(users)), "t90": t90, "recall": {}}
    for name, ranked_ids in rows.items():
        figures["recall"][name] = {}
        for k in (20, 5):
            values = recall_at_k(ranked_ids, relevant, k)
            low, high = bootstrap(values, args.resamples)
            figures["recall"][name][f"at_{k}"] = {"mean": round(float(values.mean()), 4),
                                                 "ci95": [round(low, 4), round(high, 4)]}

    # Page impressions of new items, exploration slot on and off (the served pipeline, in process).
    shares = {}
    for label, max_items in (("exploration on", config.reranking.exploration.max_items), ("exploration off", 0)):
        cfg = config.model_copy(update={"reranking": config.reranking.model_copy(update={
            "exploration": config.reranking.exploration.model_copy(update={"max_items": max_items})})})
        pipeline = OrganicPipeline(serving, cfg)
        slots = new = 0
        for user in users:
            page = pipeline.run(serving.query(int(user), now=t90 + 3600, limit=K)).candidates.item_ids[:K]
            slots, new = slots + len(page), new + int(np.isin(page, index_of).sum())
        shares[label] = round(new / max(slots, 1), 4)
    figures["new_item_share_of_page_slots"] = shares
    print(json.dumps(figures, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
