"""Per-user temporal split and the fit/history/truth protocol of each evaluation phase.

Each user's interactions are ordered by (timestamp, item_id) — item_id breaks timestamp ties so
the split is deterministic — and cut into oldest train, then valid, then newest test.

Rounding rule, for a user with n interactions and fractions (f_train, f_valid, f_test):
    n_test  = max(1, round_half_up(f_test  * n))  if n >= 2 else 0
    n_valid = max(1, round_half_up(f_valid * n))  if n >= 3 else 0
    n_train = n - n_test - n_valid
and when that leaves n_train < 1 (only possible with large valid/test fractions), valid and then
test give back one interaction at a time until n_train == 1. So every user keeps at least one
training interaction; users with n >= 2 have a test interaction, users with n >= 3 a validation
one. Examples at 80/10/10: n=3 -> 1/1/1, n=10 -> 8/1/1, n=20 -> 16/2/2, n=25 -> 19/3/3
(2.5 rounds half up to 3), n=24 -> 20/2/2.

Phases (the protocol every model in the benchmark follows):
    "valid": fit on train,          exclude train history,          score against valid;
    "test":  fit on train + valid,  exclude train + valid history,  score against test.
The truth of a phase leaves out items already in that phase's history (a re-consumed item can
never be recommended, so it could never be hit).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from app.evaluation.config import SplitConfig
from app.evaluation.sets import UserItemSets

Phase = Literal["valid", "test"]
PHASES: tuple[Phase, ...] = ("valid", "test")
INTERACTION_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


@dataclass(frozen=True)
class Split:
    """Three disjoint interaction frames (same columns as the input) and the phase protocol."""

    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame

    def fit_data(self, phase: Phase) -> pd.DataFrame:
        """What a model may learn from in this phase."""
        _check_phase(phase)
        if phase == "valid":
            return self.train
        return pd.concat([self.train, self.valid], ignore_index=True)

    def history(self, phase: Phase) -> UserItemSets:
        """Per-user items excluded from recommendation: exactly the pairs in fit_data(phase)."""
        return UserItemSets.from_frame(self.fit_data(phase))

    def truth(self, phase: Phase) -> UserItemSets:
        """Per-user relevant items: the phase's held-out part minus the user's history."""
        _check_phase(phase)
        held_out = self.valid if phase == "valid" else self.test
        history = self.history(phase)
        seen = history.contains_pairs(held_out["user_id"].to_numpy(), held_out["item_id"].to_numpy())
        return UserItemSets.from_frame(held_out[~seen])

    @property
    def catalogue(self) -> np.ndarray:
        """Every item id in any part: the denominator of coverage and the support of Gini."""
        return np.unique(np.concatenate([p["item_id"].to_numpy(np.int64) for p in (self.train, self.valid, self.test)]))


def temporal_split(
    interactions: pd.DataFrame,
    fractions: tuple[float, float, float] | SplitConfig = (0.8, 0.1, 0.1),
) -> Split:
    """Split each user's history by time into train/valid/test (rounding rule: module docstring).

    >>> split = temporal_split(interactions)            # 80/10/10
    >>> split.fit_data("test"), split.truth("test")     # what to fit on, what to hit
    """
    config = fractions if isinstance(fractions, SplitConfig) else SplitConfig(
        train_fraction=fractions[0], valid_fraction=fractions[1], test_fraction=fractions[2]
    )
    missing = [c for c in ("user_id", "item_id", "timestamp") if c not in interactions.columns]
    if missing:
        raise ValueError(f"interactions lack columns {missing}")

    ordered = interactions.sort_values(["user_id", "timestamp", "item_id"], kind="stable", ignore_index=True)
    users = ordered["user_id"].to_numpy()
    boundaries = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    sizes = np.diff(np.r_[boundaries, len(users)])
    n_train, n_valid, n_test = split_sizes(sizes, config)

    # Position of each row within its user's (time-ordered) history.
    position = np.arange(len(users)) - np.repeat(boundaries, sizes)
    train_end = np.repeat(n_train, sizes)
    valid_end = train_end + np.repeat(n_valid, sizes)
    part = np.where(position < train_end, 0, np.where(position < valid_end, 1, 2))
    return Split(
        train=ordered[part == 0].reset_index(drop=True),
        valid=ordered[part == 1].reset_index(drop=True),
        test=ordered[part == 2].reset_index(drop=True),
    )


def split_sizes(n: np.ndarray, config: SplitConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n_train, n_valid, n_test) per user for history lengths n; the rule in the module docstring."""
    n = np.asarray(n, dtype=np.int64)
    n_test = np.where(n >= 2, np.maximum(1, _round_half_up(config.test_fraction * n)), 0)
    n_valid = np.where(n >= 3, np.maximum(1, _round_half_up(config.valid_fraction * n)), 0)
    excess = np.maximum(0, n_test + n_valid - (n - 1))
    # Valid gives back first (keeping a test point matters more), never below 1 when n >= 3.
    from_valid = np.minimum(excess, np.maximum(n_valid - 1, 0))
    n_valid = n_valid - from_valid
    excess = excess - from_valid
    from_test = np.minimum(excess, np.maximum(n_test - 1, 0))
    n_test = n_test - from_test
    n_train = n - n_valid - n_test
    return n_train, n_valid, n_test


def _round_half_up(x: np.ndarray) -> np.ndarray:
    # The epsilon keeps exact halves (0.1 * 25 = 2.5000000000000004 or 2.4999999999999996) stable.
    return np.floor(np.asarray(x, dtype=np.float64) + 0.5 + 1e-9).astype(np.int64)


def _check_phase(phase: str) -> None:
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
