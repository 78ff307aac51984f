"""Do the ranking heads recover the truth when trained on an event log alone?

    python benchmarks/simulator_recovery.py [--dir DIR] [--users 300] [--days 14] [--holdout-days 3]

The log is the user simulator's (`rayfeed data export simulator DIR`, tuning/export.py):
impressions at their positions, clicks and hides drawn from a position-biased model, likes,
shares and watch time drawn from the same true preference q = σ(a_ui). The organic pipeline is
trained on the log through the table contract (`data.dataset: tables`), the last `holdout-days`
held out; on the held-out impressions each head's prediction (position-neutral, as served) is
compared with its true expected value:

    click  q                          like   LIKE_RATE · q²     share  SHARE_RATE · q²
    hide   (1 − q) (hide after no click)                        watch  q² (watched fraction)

Printed: Spearman correlation of prediction and truth (pooled, and within users), the AUC of
P(click) against the clicks that happened, and the same for a popularity baseline (each item's
click rate in the training log), the ratio of the two, and the training report's calibration.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

DAY = 86_400.0


def within_user_spearman(frame: pd.DataFrame, prediction: str, truth: str) -> float:
    values = [spearmanr(g[prediction], g[truth]).statistic for _, g in frame.groupby("user_id") if len(g) >= 5]
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    pos = labels > 0.5
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    ranks = pd.Series(scores).rank().to_numpy()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)) if n_pos and n_neg else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="an exported simulator log (exported here if absent)")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--holdout-days", type=float, default=3.0)
    args = parser.parse_args()

    from app.data.loading import load_tables
    from app.data.storage import read_raw_tables, write_table
    from app.organic import OrganicPipeline
    from config import load_config
    from training.organic import fit_organic, production_split
    from tuning.export import LIKE_RATE, SHARE_RATE, export_simulator_logs

    started = time.perf_counter()
    config = load_config()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="rayfeed-simlog-"))
    if not (Path(directory) / "truth.parquet").exists():
        print(export_simulator_logs(config, directory, args.users, args.days, log=lambda m: None))
    truth = pd.read_parquet(Path(directory) / "truth.parquet")
    cut = truth["timestamp"].max() - args.holdout_days * DAY

    # Training sees the log before the cut only.
    train_dir = Path(tempfile.mkdtemp(prefix="rayfeed-simtrain-"))
    for name, table in read_raw_tables(directory).items():
        if name == "interactions":
            frame = table.to_pandas()
            table = table.filter(pa_mask(frame["timestamp"].to_numpy() < cut))
        write_table(table, train_dir, name)
    data = config.data.model_copy(update={"dataset": "tables", "tables": config.data.tables.model_copy(
        update={"uri": str(train_dir), "name": "simulator-log"})})
    config = config.model_copy(update={"data": data})
    dataset = load_tables(data)
    print(f"training log: {len(dataset.events)} events ({(dataset.events['event'] == 'impression').sum()} impressions), "
          f"{len(dataset.interactions)} engaged (user, item) pairs; held out: {int((truth['timestamp'] >= cut).sum())} "
          f"impressions after day {(cut - truth['timestamp'].min()) / DAY:.1f}")
    history, labels = production_split(dataset.interactions, config.training.label_fraction)
    models = fit_organic(dataset, history, labels, config, use_ray=False, log=print)

    held = truth[truth["timestamp"] >= cut].reset_index(drop=True)
    pipeline = OrganicPipeline(models, config)
    scorer = pipeline.ranking.scorer
    predictions = []
    for user_id, group in held.groupby("user_id", sort=False):
        from app.pipeline import Candidates

        query = models.query(int(user_id), now=float(cut), limit=50)
        candidates = Candidates.from_source("log", group["item_id"].to_numpy(np.int64), np.ones(len(group)))
        scores = scorer.score_batch([(query, candidates)])[0]
        predictions.append(pd.DataFrame({"row": group.index.to_numpy(), **{k: v for k, v in scores.items()}}))
    scored = held.join(pd.concat(predictions).set_index("row"))
    q = scored["preference"].to_numpy()
    scored["truth_click"], scored["truth_like"], scored["truth_share"] = q, LIKE_RATE * q * q, SHARE_RATE * q * q
    scored["truth_hide"], scored["truth_watch"] = 1 - q, q * q
    train_truth = truth[truth["timestamp"] < cut]
    popularity = train_truth.groupby("item_id")["clicked"].mean()
    scored["baseline"] = popularity.reindex(scored["item_id"]).fillna(train_truth["clicked"].mean()).to_numpy()

    print(f"\nheld-out impressions: {len(scored)}, users {scored['user_id'].nunique()}, "
          f"clicked {scored['clicked'].mean():.1%}")
    print("| head | Spearman(prediction, truth) pooled | within users | baseline (item popularity) pooled | ratio |")
    print("|---|---:|---:|---:|---:|")
    for head, column in (("click", "p_click"), ("like", "p_like"), ("share", "p_share"), ("hide", "p_hide"),
                         ("watch", "e_watch")):
        ours = spearmanr(scored[column], scored[f"truth_{head}"]).statistic
        base = spearmanr(scored["baseline"], scored[f"truth_{head}"]).statistic
        print(f"| {head} | {ours:.3f} | {within_user_spearman(scored, column, f'truth_{head}'):.3f} | "
              f"{base:.3f} | {ours / base if base else float('nan'):.2f}x |")
    print(f"\nAUC of P(click) on the clicks that happened: {auc(scored['clicked'].to_numpy(float), scored['p_click'].to_numpy()):.3f} "
          f"(popularity baseline {auc(scored['clicked'].to_numpy(float), scored['baseline'].to_numpy()):.3f}); "
          f"mean P(click) {scored['p_click'].mean():.4f} vs observed click rate {scored['clicked'].mean():.4f}")
    print(f"total {time.perf_counter() - started:.0f} s")


def pa_mask(values: np.ndarray):
    import pyarrow as pa

    return pa.array(values)


if __name__ == "__main__":
    main()
