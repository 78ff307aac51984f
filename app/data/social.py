"""A seeded friend graph with documented homophily on real user attributes.

MovieLens has no social graph, so one is generated, never hard-coded:
  * each user proposes Poisson(friends_per_user / 2) friendships; edges are symmetrised, so the
    mean degree is about `friends_per_user`;
  * a proposal stays local (same first `friend_zip_prefix_len` zip digits) with probability
    LOCAL_SHARE when the user has neighbours, otherwise it draws from a random sample of all users;
  * within the pool, a friend is drawn with weight exp(−|Δage| / friend_age_scale) × (2 if the
    occupation matches else 1): age and occupation homophily;
  * the edge weight is that affinity; each user's `close_friends_per_user` heaviest edges are close.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from app.data.config import DataConfig

LOCAL_SHARE = 0.7
GLOBAL_POOL = 64
SAME_OCCUPATION_BOOST = 2.0


def _affinity(age_u: int, occ_u: object, ages: np.ndarray, occupations: np.ndarray, scale: float) -> np.ndarray:
    return np.exp(-np.abs(ages - age_u) / scale) * np.where(occupations == occ_u, SAME_OCCUPATION_BOOST, 1.0)


def generate_friend_graph(users: pd.DataFrame, config: DataConfig) -> pd.DataFrame:
    rng = np.random.default_rng(config.seed)
    ids = users["user_id"].to_numpy(np.int64)
    ages = users["age"].to_numpy(np.float64)
    occupations = users["occupation"].to_numpy(object)
    prefixes = users["zip_code"].astype(str).str[: config.friend_zip_prefix_len].to_numpy(object)
    n = len(ids)
    if n < 2 or config.friends_per_user == 0:
        return pd.DataFrame({"user_id": [], "friend_id": [], "weight": [], "close": []}).astype(
            {"user_id": np.int64, "friend_id": np.int64, "weight": np.float32, "close": bool}
        )
    buckets: dict[object, np.ndarray] = {p: np.flatnonzero(prefixes == p) for p in pd.unique(prefixes)}
    proposals = rng.poisson(config.friends_per_user / 2.0, size=n)
    src, dst = [], []
    for u in range(n):
        k = int(proposals[u])
        if k == 0:
            continue
        local = buckets[prefixes[u]]
        local = local[local != u]
        n_local = int(rng.binomial(k, LOCAL_SHARE)) if len(local) else 0
        for pool, count in ((local, n_local), (rng.integers(0, n, size=GLOBAL_POOL), k - n_local)):
            pool = pool[pool != u]
            if count == 0 or len(pool) == 0:
                continue
            w = _affinity(ages[u], occupations[u], ages[pool], occupations[pool], config.friend_age_scale)
            chosen = rng.choice(pool, size=min(count, len(pool)), replace=False, p=w / w.sum())
            src.extend([u] * len(chosen))
            dst.extend(chosen.tolist())
    src_a, dst_a = np.array(src, np.int64), np.array(dst, np.int64)
    both = np.concatenate([np.stack([src_a, dst_a], 1), np.stack([dst_a, src_a], 1)])
    both = np.unique(both, axis=0)
    weight = _pair_affinity(both, ages, occupations, config.friend_age_scale)
    edges = pd.DataFrame({"user_id": ids[both[:, 0]], "friend_id": ids[both[:, 1]], "weight": weight.astype(np.float32)})
    rank = edges.groupby("user_id")["weight"].rank(method="first", ascending=False)
    edges["close"] = (rank <= config.close_friends_per_user).to_numpy()
    return edges.reset_index(drop=True)


def _pair_affinity(pairs: np.ndarray, ages: np.ndarray, occupations: np.ndarray, scale: float) -> np.ndarray:
    a, b = pairs[:, 0], pairs[:, 1]
    same = occupations[a] == occupations[b]
    return np.exp(-np.abs(ages[a] - ages[b]) / scale) * np.where(same, SAME_OCCUPATION_BOOST, 1.0)
