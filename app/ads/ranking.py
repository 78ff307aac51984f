"""P(click) and P(conversion | click) for a user and candidate ads, and eCPM.

Both models are L2-regularised logistic regressions over the same features: the genre overlap
between the user's top genres and the ad's topics, the ad category, and category crossed with
gender, age bucket and occupation. The logged slot is a training-time feature (against position
bias) and is neutral at serving: predictions are for the top slot, and the auction applies the
slot factors. Features are one-hot groups, so a row is a handful of column indices plus the
overlap; prediction is a gather-and-sum, not a matrix product.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import optimize, sparse

from app.ads.encoding import N_AGE_BUCKETS, AdColumns, AdVocabulary, UserColumns, encode_ads, encode_users, genre_overlap
from app.ads.types import Ad, AdUser, Campaign

_EPS = 1e-12


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of binary labels `y` under probabilities `p`."""
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


@dataclass(frozen=True)
class AdFeaturizer:
    """Maps (user, ad, slot) rows to one-hot column indices plus the numeric overlap column."""

    vocab: AdVocabulary
    n_slots: int

    @property
    def _groups(self) -> list[int]:
        c = len(self.vocab.categories) + 1
        return [
            c,  # category
            (len(self.vocab.genders) + 1) * c,  # gender x category
            N_AGE_BUCKETS * c,  # age bucket x category
            (len(self.vocab.occupations) + 1) * c,  # occupation x category
            self.n_slots,  # logged slot
        ]

    @property
    def n_features(self) -> int:
        return 2 + sum(self._groups)  # overlap, overlap>0, then the one-hot groups

    def indices(self, u: UserColumns, a: AdColumns, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(one-hot column index per group [n, 5], numeric columns [n, 2]) for aligned rows."""
        c = len(self.vocab.categories) + 1
        offsets = 2 + np.cumsum([0, *self._groups[:-1]])
        one_hot = np.stack(
            [
                a.category,
                u.gender * c + a.category,
                u.age_bucket * c + a.category,
                u.occupation * c + a.category,
                np.minimum(slots, self.n_slots - 1),
            ],
            axis=1,
        ) + offsets
        overlap = genre_overlap(u.genre_mask, a.topic_mask)
        return one_hot.astype(np.int64), np.stack([overlap, (overlap > 0).astype(np.float64)], axis=1)

    def matrix(self, u: UserColumns, a: AdColumns, slots: np.ndarray) -> sparse.csr_matrix:
        one_hot, numeric = self.indices(u, a, slots)
        n = len(slots)
        rows = np.repeat(np.arange(n), one_hot.shape[1] + 2)
        cols = np.concatenate([np.tile([0, 1], (n, 1)), one_hot], axis=1).ravel()
        vals = np.concatenate([numeric, np.ones_like(one_hot, dtype=np.float64)], axis=1).ravel()
        return sparse.csr_matrix((vals, (rows, cols)), shape=(n, self.n_features))


@dataclass(frozen=True)
class LogisticModel:
    weights: np.ndarray
    bias: float

    @classmethod
    def fit(cls, x: sparse.csr_matrix, y: np.ndarray, l2: float, max_iter: int) -> "LogisticModel":
        """Minimise mean log-loss + l2/(2n) * |w|^2 (bias unpenalised) with L-BFGS."""
        y = np.asarray(y, dtype=np.float64)
        n = len(y)
        base = np.clip(y.mean(), 1e-6, 1 - 1e-6)

        def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
            w, b = theta[:-1], theta[-1]
            z = x @ w + b
            # log(1 + e^z) - y z, computed stably
            loss = np.logaddexp(0, z) - y * z
            residual = 1.0 / (1.0 + np.exp(-z)) - y
            grad_w = x.T @ residual / n + l2 * w / n
            return float(loss.mean() + 0.5 * l2 * w @ w / n), np.append(grad_w, residual.mean())

        theta0 = np.append(np.zeros(x.shape[1]), np.log(base / (1 - base)))
        result = optimize.minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
        return cls(result.x[:-1].copy(), float(result.x[-1]))

    def predict(self, one_hot: np.ndarray, numeric: np.ndarray) -> np.ndarray:
        z = self.bias + self.weights[one_hot].sum(axis=1) + numeric @ self.weights[:2]
        return 1.0 / (1.0 + np.exp(-z))


@dataclass(frozen=True)
class AdRanker:
    """Scores candidate ads for one user: pCTR (top slot) and pCVR, in input order.

    Example:
        ranker = AdRanker.train(events, users, world.ads, world.campaigns_by_id, vocab, n_slots=5)
        pctr, pcvr = ranker.score(user, ads, campaigns)
    """

    featurizer: AdFeaturizer
    ctr: LogisticModel
    cvr: LogisticModel

    def score(self, user: AdUser, ads: Sequence[Ad], campaigns: dict[int, Campaign]) -> tuple[np.ndarray, np.ndarray]:
        if not ads:
            return np.zeros(0), np.zeros(0)
        u = encode_users([user] * len(ads), self.featurizer.vocab)
        a = encode_ads(ads, campaigns, self.featurizer.vocab)
        one_hot, numeric = self.featurizer.indices(u, a, np.zeros(len(ads), dtype=np.int64))
        return self.ctr.predict(one_hot, numeric), self.cvr.predict(one_hot, numeric)

    @classmethod
    def train(
        cls,
        events: pd.DataFrame,
        users: Sequence[AdUser],
        ads: Sequence[Ad],
        campaigns: dict[int, Campaign],
        vocab: AdVocabulary,
        n_slots: int,
        l2: float,
        max_iter: int,
    ) -> "AdRanker":
        """Fit pCTR on every logged impression and pCVR on the clicked ones."""
        featurizer = AdFeaturizer(vocab, n_slots)
        x = featurizer.matrix(*event_columns(events, users, ads, campaigns, vocab))
        click = events["click"].to_numpy(dtype=bool)
        ctr = LogisticModel.fit(x, click, l2, max_iter)
        cvr = LogisticModel.fit(x[click], events["conversion"].to_numpy(dtype=bool)[click], l2, max_iter)
        return cls(featurizer, ctr, cvr)

    def predict_events(
        self, events: pd.DataFrame, users: Sequence[AdUser], ads: Sequence[Ad], campaigns: dict[int, Campaign]
    ) -> tuple[np.ndarray, np.ndarray]:
        """pCTR at the logged slot and pCVR for logged rows (for offline evaluation)."""
        one_hot, numeric = self.featurizer.indices(*event_columns(events, users, ads, campaigns, self.featurizer.vocab))
        return self.ctr.predict(one_hot, numeric), self.cvr.predict(one_hot, numeric)

    def save(self, path: Path) -> None:
        np.savez(
            path,
            ctr_w=self.ctr.weights, ctr_b=self.ctr.bias, cvr_w=self.cvr.weights, cvr_b=self.cvr.bias,
            n_slots=self.featurizer.n_slots,
        )

    @classmethod
    def load(cls, path: Path, vocab: AdVocabulary) -> "AdRanker":
        with np.load(path) as f:
            featurizer = AdFeaturizer(vocab, int(f["n_slots"]))
            if f["ctr_w"].shape != (featurizer.n_features,):
                raise ValueError(f"{path}: weights have {f['ctr_w'].shape[0]} features, vocabulary needs {featurizer.n_features}")
            return cls(featurizer, LogisticModel(f["ctr_w"], float(f["ctr_b"])), LogisticModel(f["cvr_w"], float(f["cvr_b"])))


def event_columns(
    events: pd.DataFrame, users: Sequence[AdUser], ads: Sequence[Ad], campaigns: dict[int, Campaign], vocab: AdVocabulary
) -> tuple[UserColumns, AdColumns, np.ndarray]:
    """Encode logged rows by joining their user and ad ids to the user and ad tables."""
    user_by_id = {u.user_id: u for u in users}
    ad_by_id = {a.ad_id: a for a in ads}
    uc = encode_users(list(user_by_id.values()), vocab)
    ac = encode_ads(list(ad_by_id.values()), campaigns, vocab)
    u_pos = pd.Index(list(user_by_id)).get_indexer(events["user_id"])
    a_pos = pd.Index(list(ad_by_id)).get_indexer(events["ad_id"])
    if (u_pos < 0).any() or (a_pos < 0).any():
        raise ValueError("events name users or ads missing from the tables")
    u = UserColumns(uc.age_bucket[u_pos], uc.gender[u_pos], uc.occupation[u_pos], uc.genre_mask[u_pos])
    a = AdColumns(ac.category[a_pos], ac.topic_mask[a_pos])
    return u, a, events["slot"].to_numpy(dtype=np.int64)
