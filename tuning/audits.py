"""Audits of popularity bias, position bias and feedback loops, on the simulator and on real data.

Position bias
  * `randomised_click_log` — result randomisation: the first n pool items are shown in a
    uniformly random order, so relevance is independent of position and CTR_p / CTR_1
    estimates θ_p / θ_1 (`estimate_position_curve`, with a delta-method 95% CI on the log
    ratio). `max_curve_error` compares with the simulator's known curve.
  * `position_training_audit` — logs under the production order (pool order plus a little
    noise: position and relevance are confounded), the real MultiTaskDCN trained twice by
    training/ranker.py's `train_loop`: naive (positions unknown) and position-aware (every
    impression carries its logged position); scored position-neutrally against the
    simulator's true affinity (NDCG@10 over each held-out user's pool).
  * `obd_position_estimate` — the Open Bandit Dataset sample in the `obp` wheel (uniform-
    random policy, 3 slots): CTR per slot and the ratio to slot 1 with 95% CIs.
Popularity bias
  * `popularity_audit_real` — MovieLens-100k, per-user temporal split: two-tower trained with
    and without logQ correction; top-20 lists (history excluded) → exposure Gini, long-tail
    share, coverage and Recall@20 (the engagement cost); plus the exposure-aware reranker on the
    logQ model's top-200.
  * `simulator_audit` — served, examined impressions under a configuration, with and without
    the exposure-aware reranker: exposure Gini, long-tail share, creators' exposure, clicks and
    long-term value (the cost), and the weekly feedback-loop rows (topics and creators consumed,
    interest entropy).
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from app.collator.config import CollatorConfig
from app.evaluation.metrics import gini
from tuning.config import SimulationConfig
from tuning.mitigations import PopularityPenaltySelector
from tuning.simulator import LatentAffinityModel, PositionBasedChoiceModel, simulate, sigmoid
from tuning.world import SimWorld

Progress = Callable[[str], None]
Z95 = 1.959963984540054


# -- popularity metrics -----------------------------------------------------------------------------

def head_items(popularity: np.ndarray, head_share: float = 0.2) -> np.ndarray:
    """Boolean mask (by item id) of the `head_share` most popular items among those with any count."""
    ids = np.flatnonzero(popularity > 0)
    n_head = max(1, int(round(head_share * len(ids))))
    head = ids[np.argsort(-popularity[ids], kind="stable")[:n_head]]
    mask = np.zeros(len(popularity), bool)
    mask[head] = True
    return mask


def exposure_metrics(exposure: np.ndarray, head: np.ndarray, catalogue: np.ndarray) -> dict[str, float]:
    """Gini of exposure over the catalogue, long-tail share (exposure outside the head), coverage."""
    e = exposure[catalogue]
    total = max(float(e.sum()), 1e-12)
    return {
        "exposure_gini": gini(e),
        "long_tail_share": float(exposure[catalogue][~head[catalogue]].sum() / total),
        "coverage": float((e > 0).mean()),
    }


# -- position bias ------------------------------------------------------------------------------------

def randomised_click_log(world: SimWorld, sim: SimulationConfig, n_lists: int, list_len: int = 10,
                         seed: int = 0, randomise: bool = True, noise: float = 0.05) -> pd.DataFrame:
    """Impressions (user, item, position, click) drawn from the simulator's choice model.

    randomise=True: result randomisation over each user's top `list_len` pool items.
    randomise=False: the production policy: pool order by final score + N(0, noise) jitter."""
    rng = np.random.default_rng([seed, 31337])
    choice = PositionBasedChoiceModel(sim.choice)
    affinity = LatentAffinityModel(world.item_latent, sim.choice.affinity_scale, sim.choice.affinity_bias)
    theta = choice.examination(list_len)
    rows_u, rows_i, rows_p, rows_c = [], [], [], []
    users = rng.integers(0, world.n_users, size=n_lists)
    for r in users:
        pool = world.pools[int(world.user_ids[r])]
        if randomise:
            items = pool.item_ids[:list_len][rng.permutation(min(list_len, len(pool.item_ids)))]
        else:
            window = pool.item_ids[: 3 * list_len]
            jitter = pool.final[: len(window)] + noise * rng.normal(size=len(window))
            items = window[np.argsort(-jitter, kind="stable")][:list_len]
        p = choice.click_probability(affinity.logit(world.user_latent[r], items))
        clicks = (rng.random(len(items)) < theta[: len(items)]) & (rng.random(len(items)) < p)
        rows_u.append(np.full(len(items), world.user_ids[r]))
        rows_i.append(items)
        rows_p.append(np.arange(1, len(items) + 1))
        rows_c.append(clicks)
    return pd.DataFrame({"user_id": np.concatenate(rows_u), "item_id": np.concatenate(rows_i),
                         "position": np.concatenate(rows_p), "click": np.concatenate(rows_c).astype(int)})


def estimate_position_curve(log: pd.DataFrame) -> pd.DataFrame:
    """CTR per position and the ratio to position 1 with a 95% CI (delta method on log ratio).

    Unbiased for θ_p / θ_1 when the logging policy randomised the order (relevance ⟂ position)."""
    g = log.groupby("position")["click"].agg(clicks="sum", n="count").reset_index()
    g["ctr"] = g["clicks"] / g["n"]
    c1, n1 = float(g["clicks"].iloc[0]), float(g["n"].iloc[0])
    ratio = g["ctr"] / (c1 / n1)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = np.sqrt(1 / g["clicks"] - 1 / g["n"] + 1 / c1 - 1 / n1)
    g["relative"] = ratio
    g["relative_low"] = ratio * np.exp(-Z95 * se)
    g["relative_high"] = ratio * np.exp(Z95 * se)
    return g


def max_curve_error(curve: pd.DataFrame, sim: SimulationConfig) -> dict[str, float]:
    """Errors of the estimated θ_p/θ_1 against the simulator's known curve; and the fitted power."""
    truth = sim.choice.examination(int(curve["position"].max()))[curve["position"].to_numpy() - 1]
    est = curve["relative"].to_numpy()
    inside = (curve["relative_low"] <= truth) & (truth <= curve["relative_high"])
    ok = est > 0
    slope = np.polyfit(np.log(curve["position"].to_numpy()[ok]), np.log(est[ok]), 1)[0]
    return {"max_abs_error": float(np.max(np.abs(est - truth))), "mean_abs_error": float(np.mean(np.abs(est - truth))),
            "ci_coverage": float(inside.mean()), "fitted_power": float(-slope), "true_power": sim.choice.position_power}


def _examples(world: SimWorld, log: pd.DataFrame, with_position: bool):
    """RankingExamples over (user, item) pairs: u ⊙ v (the system's two-tower embeddings), the
    production score and log popularity as dense features; the logged position when asked."""
    from app.ranking.config import HEADS
    from app.ranking.features import FeatureSchema
    from training.ranker import RankingExamples

    rows = {int(u): r for r, u in enumerate(world.user_ids)}
    u = world.user_latent[[rows[int(x)] for x in log["user_id"]]]
    items = log["item_id"].to_numpy(np.int64)
    final = np.zeros(len(log))
    for uid, idx in log.groupby("user_id").indices.items():
        pool = world.pools[int(uid)]
        lookup = dict(zip(pool.item_ids.tolist(), pool.final.tolist()))
        final[idx] = [lookup.get(int(i), 0.0) for i in items[idx]]
    dense = np.concatenate([u * world.item_latent[items], final[:, None], np.log1p(world.item_popularity[items])[:, None]], axis=1)
    dim = world.item_latent.shape[1]
    schema = FeatureSchema(tuple(f"uv_{k}" for k in range(dim)) + ("production_score", "log_popularity"), ())
    labels = np.zeros((len(log), len(HEADS)), np.float32)
    labels[:, 0] = log["click"].to_numpy(np.float32)
    position = np.array(log["position"], dtype=np.int64) if with_position else np.zeros(len(log), np.int64)
    return RankingExamples(dense.astype(np.float32), np.zeros((len(log), 0), np.int64), position, labels,
                           log["user_id"].to_numpy(np.int64), items, schema)


def _ndcg(scores: np.ndarray, gains: np.ndarray, k: int) -> float:
    order = np.argsort(-scores, kind="stable")[:k]
    ideal = np.sort(gains)[::-1][:k]
    disc = 1 / np.log2(np.arange(2, k + 2))
    return float((gains[order] * disc[: len(order)]).sum() / max((ideal * disc[: len(ideal)]).sum(), 1e-12))


def position_training_audit(world: SimWorld, sim: SimulationConfig, n_lists: int = 20_000, list_len: int = 10,
                            seed: int = 0, epochs: int = 6, progress: Progress = print) -> dict[str, float]:
    """Naive vs position-aware ranker training on confounded logs, judged on true affinity."""
    import torch

    from app.ranking.config import RankingConfig
    from training.ranker import train_loop

    log = randomised_click_log(world, sim, n_lists, list_len, seed, randomise=False)
    rng = np.random.default_rng([seed, 5])
    test_users = set(rng.choice(world.user_ids, size=max(1, world.n_users // 5), replace=False).tolist())
    train_log = log[~log["user_id"].isin(test_users)].reset_index(drop=True)
    config = RankingConfig.model_validate({
        "training": {"epochs": epochs, "batch_size": 512, "lr": 3e-3, "position_dropout": 0.1, "seed": seed, "threads": 1},
        "model": {"deep_layers": [64, 32], "bottom": "shared", "cross_layers": 1},
    })
    affinity = LatentAffinityModel(world.item_latent, sim.choice.affinity_scale, sim.choice.affinity_bias)
    out: dict[str, float] = {"train_impressions": float(len(train_log)), "train_clicks": float(train_log["click"].sum())}
    for name, with_position in (("naive", False), ("position_aware", True)):
        model = train_loop(_examples(world, train_log, with_position), config, log=lambda m: None)
        ndcgs = []
        for uid in sorted(test_users):
            r = int(np.flatnonzero(world.user_ids == uid)[0])
            pool = world.pools[int(uid)].item_ids[:100]
            pairs = pd.DataFrame({"user_id": uid, "item_id": pool, "position": 0, "click": 0})
            ex = _examples(world, pairs, False)
            with torch.no_grad():
                pred = model.predict(torch.as_tensor(ex.dense), torch.as_tensor(ex.categorical))[:, 0].numpy()
            truth = sigmoid(affinity.logit(world.user_latent[r], pool))
            ndcgs.append(_ndcg(pred, truth, 10))
        out[f"ndcg10_{name}"] = float(np.mean(ndcgs))
        out[f"ndcg10_{name}_se"] = float(np.std(ndcgs, ddof=1) / np.sqrt(len(ndcgs))) if len(ndcgs) > 1 else float("nan")
        out[f"_per_user_{name}"] = ndcgs  # type: ignore[assignment]
        if with_position:
            bias = model.position_bias.weight[1: list_len + 1, 0].detach().numpy()
            out["learned_position_logit"] = bias.tolist()  # type: ignore[assignment]
        progress(f"  position audit: {name} NDCG@10 vs true affinity {out[f'ndcg10_{name}']:.4f}")
    # Ranking by the production score alone: the logging policy's own quality.
    prod = []
    for uid in sorted(test_users):
        r = int(np.flatnonzero(world.user_ids == uid)[0])
        pool = world.pools[int(uid)]
        prod.append(_ndcg(pool.final[:100], sigmoid(affinity.logit(world.user_latent[r], pool.item_ids[:100])), 10))
    out["ndcg10_production_score"] = float(np.mean(prod))
    diff = np.asarray(out.pop("_per_user_position_aware")) - np.asarray(out.pop("_per_user_naive"))  # type: ignore[arg-type]
    out["ndcg10_gain"] = float(diff.mean())
    out["ndcg10_gain_ci_half"] = float(Z95 * diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else float("nan")
    return out


def obd_position_estimate(wheel: Path, campaign: str = "all") -> pd.DataFrame | None:
    """CTR by slot in the OBD sample (uniform-random policy) and the ratio to slot 1, 95% CI.

    Returns None when the wheel holds no such sample."""
    wheel = Path(wheel)
    if not wheel.exists():
        return None
    name = f"obp/dataset/obd/random/{campaign}/{campaign}.csv"
    with zipfile.ZipFile(wheel) as z:
        if name not in z.namelist():
            return None
        df = pd.read_csv(io.BytesIO(z.read(name)), usecols=["position", "click"])
    df["position"] = df["position"] - df["position"].min() + 1
    curve = estimate_position_curve(df)
    se = np.sqrt(curve["ctr"] * (1 - curve["ctr"]) / curve["n"])
    curve["ctr_low"], curve["ctr_high"] = curve["ctr"] - Z95 * se, curve["ctr"] + Z95 * se
    return curve


# -- popularity bias on real data ---------------------------------------------------------------------

def _two_tower_embeddings(dataset, history: pd.DataFrame, config, logq: bool, cache_dir: Path, progress: Progress):
    from app.retrieval.two_tower import train_two_tower_in_process

    tt_config = config.retrieval.two_tower.model_copy(update={"logq_correction": logq})
    key = hashlib.sha1(json.dumps([dataset.name, len(history), tt_config.model_dump(mode="json")], sort_keys=True).encode()).hexdigest()[:12]
    path = Path(cache_dir) / f"two_tower-logq{int(logq)}-{key}.npz"
    if path.exists():
        a = np.load(path)
        return a["user_ids"], a["user_embeddings"], a["item_ids"], a["item_embeddings"]
    progress(f"  training the two-tower in-process with logq_correction={logq} (cached afterwards)")
    tt = train_two_tower_in_process(dataset, history, tt_config, on_epoch=None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, user_ids=tt.user_ids, user_embeddings=tt.user_embeddings, item_ids=tt.item_ids, item_embeddings=tt.item_embeddings)
    return tt.user_ids, tt.user_embeddings, tt.item_ids, tt.item_embeddings


def popularity_audit_real(dataset, config, cache_dir: str | Path = "data_cache/tuning", k: int = 20,
                          penalty: float = 0.5, progress: Progress = print) -> pd.DataFrame:
    """Top-k exposure on MovieLens users: logQ off / on, and logQ + exposure-aware reranker."""
    from training.organic import production_split

    history, labels = production_split(dataset.interactions, config.training.label_fraction)
    popularity = np.bincount(history["item_id"].to_numpy(np.int64), minlength=dataset.max_item_id + 1).astype(float)
    head = head_items(popularity)
    catalogue = np.sort(dataset.items["item_id"].to_numpy(np.int64))
    seen = history.groupby("user_id")["item_id"].apply(lambda s: s.to_numpy(np.int64)).to_dict()
    truth = labels.groupby("user_id")["item_id"].apply(lambda s: set(s.tolist())).to_dict()
    reranker = PopularityPenaltySelector(popularity, dataset.item_creator, k, penalty)
    rows = []
    for logq in (False, True):
        user_ids, U, item_ids, V = _two_tower_embeddings(dataset, history, config, logq, Path(cache_dir), progress)
        scores = U @ V.T
        variants = [("logQ on" if logq else "logQ off", None)]
        if logq:
            variants.append((f"logQ on + exposure-aware reranker (penalty {penalty:g})", reranker))
        for name, rr in variants:
            exposure = np.zeros(len(popularity))
            recalls = []
            for r, uid in enumerate(user_ids):
                s = scores[r].copy()
                s[np.isin(item_ids, seen.get(int(uid), []))] = -np.inf
                top = np.argsort(-s)[: 200 if rr is not None else k]
                if rr is not None:
                    top = top[rr.rerank(item_ids[top], s[top])]
                chosen = item_ids[top[:k]]
                exposure[chosen] += 1
                if int(uid) in truth:
                    t = truth[int(uid)]
                    recalls.append(len(t.intersection(chosen.tolist())) / min(k, len(t)))
            rows.append({"variant": name, **exposure_metrics(exposure, head, catalogue),
                         "mean_log_popularity": float(np.mean(np.log1p(popularity[exposure > 0].repeat(exposure[exposure > 0].astype(int))))),
                         f"recall@{k}": float(np.mean(recalls))})
            progress(f"  real-data popularity audit: {name}: Gini {rows[-1]['exposure_gini']:.3f}, "
                     f"long tail {rows[-1]['long_tail_share']:.3f}, Recall@{k} {rows[-1][f'recall@{k}']:.4f}")
    return pd.DataFrame(rows)


# -- the simulator audit -----------------------------------------------------------------------------

def simulator_audit(world: SimWorld, sim: SimulationConfig, collator: CollatorConfig, seed: int = 0,
                    days: int | None = None, penalty: float = 0.5, progress: Progress = print) -> dict[str, object]:
    """Baseline vs exposure-aware reranker on the simulator: exposure, creators, feedback loop, cost."""
    head = head_items(world.item_popularity)
    catalogue = np.flatnonzero(world.item_creator >= 0)
    reranker = PopularityPenaltySelector(world.item_popularity, world.item_creator, sim.system.pool_size, penalty,
                                         creator_weight=0.0)
    out: dict[str, object] = {"variants": [], "weeks": {}}
    for name, rr in (("baseline", None), (f"exposure-aware reranker (penalty {penalty:g})", reranker)):
        result = simulate(world, collator, sim, seed=seed, days=days, reranker=rr)
        creators = np.array(list(result.creator_exposure.values()))
        row = {"variant": name, **exposure_metrics(result.item_exposure, head, catalogue),
               "creator_exposure_gini": gini(creators) if len(creators) else 0.0,
               "creators_exposed": float(len(creators)),
               "creators_quit": result.weeks[-1]["creators_quit"] if result.weeks else 0.0,
               **{k: result.objective[k] for k in ("long_term_value", "clicks", "revenue", "retained_share")}}
        out["variants"].append(row)  # type: ignore[union-attr]
        out["weeks"][name] = result.weeks  # type: ignore[index]
        progress(f"  simulator audit: {name}: exposure Gini {row['exposure_gini']:.3f}, long tail {row['long_tail_share']:.3f}, "
                 f"clicks/100 users {row['clicks']:.0f}, LTV {row['long_term_value']:.1f}")
    return out
