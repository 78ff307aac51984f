"""What the system has observed so far: the one event log every freshness strategy reads.

The replay appends each window after every strategy has observed it, so during `observe` and
`recommend` the log holds exactly the events before the current window (no future leaks).
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
import pandas as pd

from app.evaluation.sets import PAD, UserItemSets
from app.retrieval.two_tower_serving import ordered_interactions

LOG_COLUMNS = ("user_id", "item_id", "rating", "timestamp")


class InteractionLog:
    """Time-ordered interactions observed up to `as_of`.

    Example:
        log = InteractionLog(base_period, as_of=base_end)
        log.latest_items(np.array([42]), length=20)   # newest first, padded with -1
        log.add(window_events, as_of=window_end)
    """

    def __init__(self, interactions: pd.DataFrame, as_of: float) -> None:
        self._frames = [interactions.loc[:, list(LOG_COLUMNS)]]
        self.as_of = float(as_of)

    def add(self, events: pd.DataFrame, as_of: float) -> None:
        if as_of < self.as_of:
            raise ValueError(f"the log moves forward only: as_of {as_of} < {self.as_of}")
        self._frames.append(events.loc[:, list(LOG_COLUMNS)])
        self.as_of = float(as_of)
        for name in ("frame", "seen", "_last_seen", "_ordered"):
            self.__dict__.pop(name, None)

    @cached_property
    def frame(self) -> pd.DataFrame:
        if len(self._frames) > 1:
            self._frames = [pd.concat(self._frames, ignore_index=True)]
        return self._frames[0]

    @cached_property
    def seen(self) -> UserItemSets:
        """Each user's items so far: never recommended again."""
        return UserItemSets.from_frame(self.frame)

    @property
    def items(self) -> np.ndarray:
        """Every item engaged so far: the catalogue the strategies rank."""
        return np.unique(self.frame["item_id"].to_numpy(np.int64))

    @cached_property
    def _last_seen(self) -> pd.Series:
        return self.frame.groupby("user_id")["timestamp"].max()

    def last_seen(self, user_ids: np.ndarray) -> np.ndarray:
        """Timestamp of each user's latest event; NaN for users never seen."""
        return self._last_seen.reindex(np.asarray(user_ids, np.int64)).to_numpy(np.float64)

    @cached_property
    def _ordered(self) -> pd.DataFrame:
        return ordered_interactions(self.frame)

    def latest_items(self, user_ids: np.ndarray, length: int) -> np.ndarray:
        """(len(user_ids), length) item ids, each user's newest first, padded with PAD (-1)."""
        user_ids = np.asarray(user_ids, np.int64)
        out = np.full((len(user_ids), length), PAD, dtype=np.int64)
        ordered = self._ordered
        users = ordered["user_id"].to_numpy(np.int64)
        items = ordered["item_id"].to_numpy(np.int64)
        ends = np.searchsorted(users, user_ids, side="right")
        starts = np.searchsorted(users, user_ids, side="left")
        for r, (start, end) in enumerate(zip(starts, ends)):
            newest = items[max(start, end - length):end][::-1]
            out[r, : len(newest)] = newest
        return out
