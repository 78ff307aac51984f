"""What each ranking head learns from, for every kind of log (docs/data.md, "Labels"):

    head      rating log (MovieLens)        event log with impressions            event log without
    click     any rating (sampled negs)     an impression followed by a click,    an engagement (sampled
                                            like, share, watch or conversion      negatives)
    like      rating ≥ 4                    a like on it                          a like
    share     rating = 5                    a share on it                         a share
    hide      rating ≤ 2                    a hide on it                          a hide
    watch     (rating − 1) / 4              min(watch seconds / cap, 1)           the same

With impressions the negatives are real: what was shown and not engaged with. An engagement
belongs to an impression when they carry the same request id, else when it names the same user
and item within `window_s` after it.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from app.data.tables import labels_from_ratings
from app.ranking.config import HEADS

CLICK_EVENTS = ("click", "like", "share", "watch", "conversion")  # each says the user opened the item


def event_head_labels(events: pd.DataFrame, watch_seconds_cap: float) -> pd.DataFrame:
    """Per (user, item): the five head labels from its engagement events (no impressions needed)."""
    engaged = events[events["event"] != "impression"]
    kind = engaged["event"].to_numpy(object)
    watch = np.where(kind == "watch", np.nan_to_num(engaged["value"].to_numpy(np.float64)) / watch_seconds_cap, 0.0)
    frame = pd.DataFrame({
        "user_id": engaged["user_id"].to_numpy(np.int64), "item_id": engaged["item_id"].to_numpy(np.int64),
        "click": np.isin(kind, CLICK_EVENTS), "like": kind == "like", "share": kind == "share",
        "hide": kind == "hide", "watch": np.clip(watch, 0.0, 1.0),
    })
    return frame.groupby(["user_id", "item_id"], sort=False).max().astype(np.float32).reset_index()


def impression_labels(events: pd.DataFrame, watch_seconds_cap: float, window_s: float) -> pd.DataFrame:
    """One row per impression (user_id, item_id, timestamp, position) with the five head labels
    from the engagements that belong to it (module docstring)."""
    imps = events[events["event"] == "impression"].reset_index(drop=True)
    imps = imps.assign(_impression=np.arange(len(imps)))
    engaged = events[events["event"] != "impression"]
    pairs = imps[["_impression", "user_id", "item_id", "timestamp", "request_id"]].merge(
        engaged[["user_id", "item_id", "timestamp", "request_id", "event", "value"]],
        on=["user_id", "item_id"], suffixes=("", "_e"))
    same_request = pairs["request_id"].notna() & pairs["request_id_e"].notna()
    by_request = same_request & (pairs["request_id"] == pairs["request_id_e"])
    delay = pairs["timestamp_e"] - pairs["timestamp"]
    by_time = ~same_request & (delay >= 0) & (delay <= window_s)
    pairs = pairs[by_request | by_time]
    kind = pairs["event"].to_numpy(object)
    watch = np.where(kind == "watch", np.nan_to_num(pairs["value"].to_numpy(np.float64)) / watch_seconds_cap, 0.0)
    flags = pd.DataFrame({
        "_impression": pairs["_impression"].to_numpy(), "click": np.isin(kind, CLICK_EVENTS), "like": kind == "like",
        "share": kind == "share", "hide": kind == "hide", "watch": np.clip(watch, 0.0, 1.0),
    }).groupby("_impression").max()
    labels = flags.reindex(imps["_impression"]).fillna(0.0).astype(np.float32)
    out = imps[["user_id", "item_id", "timestamp", "position"]].reset_index(drop=True)
    for head in HEADS:
        out[head] = labels[head].to_numpy(np.float32)
    return out


def head_label_matrix(rows: pd.DataFrame) -> np.ndarray:
    """(n, len(HEADS)) labels of engagement rows: their own head columns where the log had events,
    the documented rating mapping for the rows without (a rating log, or a rating row in a window
    that mixes both)."""
    head_labels = labels_from_ratings(rows["rating"].to_numpy(np.float32))
    from_ratings = np.stack([head_labels[h] for h in HEADS], axis=1)
    if not all(h in rows for h in HEADS):
        return from_ratings
    from_events = rows[list(HEADS)].to_numpy(np.float32)
    return np.where(np.isnan(from_events), from_ratings, from_events).astype(np.float32)
