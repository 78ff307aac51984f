"""The core of `rayfeed eval topk --interactions H.csv --users U.txt --k 50 --out TOPK.csv`.

Inputs are validated up front; a bad value is an InputFileError naming the file, the 1-based
line number (the header is line 1) and the field, never a silent default:
- H.csv: a header containing user_id,item_id,rating,timestamp (other columns are ignored);
  ids are non-negative integers, timestamp an integer, rating a finite number. Any row counts as
  one interaction (repeated pairs collapse), whatever its rating.
- U.txt: one non-negative integer user id per line; blank lines are skipped, a repeated id is
  answered once (first occurrence order is kept).
Output: `user_id,item_id,rank` (rank from 1), users in U.txt order, at most k rows each, never an
item the user has in H.csv. Policies:
- A user absent from H.csv (cold start) gets the k most popular items of H.csv
  (PopularityRecommender: interaction count, ties to the smaller item id).
- An item absent from H.csv is never recommended: nothing is known about it (no interactions,
  no features), so no model here can score it.
- A user with fewer than k unseen items gets fewer rows.
"""
from __future__ import annotations

import os
import re
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from app.evaluation.config import EvaluationConfig
from app.evaluation.harness import check_topk
from app.evaluation.recommenders import (
    EASERecommender,
    PopularityRecommender,
    Recommender,
    RecommenderFactory,
)
from app.evaluation.sets import PAD, TopKLists, UserItemSets

REQUIRED_COLUMNS = ("user_id", "item_id", "rating", "timestamp")
_ID = re.compile(r"\d{1,18}")  # non-negative, fits int64
_INTEGER = re.compile(r"[+-]?\d{1,18}")


class InputFileError(ValueError):
    """A bad input file: where (file, 1-based line, field) and what is wrong."""

    def __init__(self, path: str | os.PathLike, line: int | None, field: str | None, message: str) -> None:
        self.path, self.line, self.field = str(path), line, field
        where = self.path + (f", line {line}" if line is not None else "") + (f", field {field!r}" if field else "")
        super().__init__(f"{where}: {message}")


def default_recommender_factory() -> Recommender:
    """EASE with the configured λ, until the organic pipeline is plugged in."""
    return EASERecommender(EvaluationConfig().ease)


def read_interactions_csv(path: str | os.PathLike) -> pd.DataFrame:
    """user_id:int64, item_id:int64, rating:float32, timestamp:int64, in file order."""
    try:
        with warnings.catch_warnings():
            # pandas only warns when the first data row is longer than the header; make it an error.
            warnings.simplefilter("error", pd.errors.ParserWarning)
            raw = pd.read_csv(path, dtype=str, keep_default_na=False, skip_blank_lines=False, index_col=False)
    except pd.errors.ParserWarning:
        raise InputFileError(path, 2, None, "malformed CSV: more fields than the header has columns") from None
    except pd.errors.EmptyDataError:
        raise InputFileError(path, 1, None, "empty file; expected a header user_id,item_id,rating,timestamp") from None
    except pd.errors.ParserError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise InputFileError(path, int(found.group(1)) if found else None, None, f"malformed CSV: {exc}") from None
    raw.columns = [str(c).strip() for c in raw.columns]
    for column in REQUIRED_COLUMNS:
        if column not in raw.columns:
            raise InputFileError(path, 1, column, f"missing column; the header is {list(raw.columns)}")

    values = {c: raw[c].fillna("").str.strip() for c in REQUIRED_COLUMNS}
    ratings = pd.to_numeric(values["rating"], errors="coerce").to_numpy(np.float64)
    bad = {
        "user_id": (~values["user_id"].str.fullmatch(_ID.pattern).to_numpy(bool), "a non-negative integer id"),
        "item_id": (~values["item_id"].str.fullmatch(_ID.pattern).to_numpy(bool), "a non-negative integer id"),
        "rating": (~np.isfinite(ratings), "a finite number"),
        "timestamp": (~values["timestamp"].str.fullmatch(_INTEGER.pattern).to_numpy(bool), "an integer"),
    }
    first = min(
        ((int(np.argmax(mask)), order, field) for order, (field, (mask, _)) in enumerate(bad.items()) if mask.any()),
        default=None,
    )
    if first is not None:
        row, _, field = first
        raise InputFileError(
            path, row + 2, field, f"expected {bad[field][1]}, got {raw[field].fillna('').iloc[row]!r}"
        )
    return pd.DataFrame({
        "user_id": values["user_id"].astype(np.int64).to_numpy(),
        "item_id": values["item_id"].astype(np.int64).to_numpy(),
        "rating": ratings.astype(np.float32),
        "timestamp": values["timestamp"].astype(np.int64).to_numpy(),
    })


def read_users_file(path: str | os.PathLike) -> np.ndarray:
    """The listed user ids (int64), first-occurrence order, repeats dropped."""
    users: list[int] = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            if not _ID.fullmatch(text):
                raise InputFileError(path, line_number, "user_id", f"expected a non-negative integer id, got {text!r}")
            users.append(int(text))
    ids = np.asarray(users, dtype=np.int64)
    _, first = np.unique(ids, return_index=True)
    return ids[np.sort(first)]


def recommend_topk(
    recommender_factory: RecommenderFactory, interactions: pd.DataFrame, user_ids: np.ndarray, k: int
) -> TopKLists:
    """Fit a fresh model on `interactions` and list k unseen items per user (cold start: Pop)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if interactions.empty:
        raise ValueError("no interactions: nothing to fit, not even popularity")
    history = UserItemSets.from_frame(interactions)
    user_ids = np.asarray(user_ids, dtype=np.int64)
    known = np.isin(user_ids, history.user_ids)
    topk = np.full((user_ids.size, k), PAD, dtype=np.int64)
    if known.any():
        model = recommender_factory()
        model.fit(interactions)
        topk[known] = model.recommend(user_ids[known], k, history)
    if (~known).any():
        popularity = PopularityRecommender()
        popularity.fit(interactions)
        topk[~known] = popularity.recommend_cold(int((~known).sum()), k)

    check_topk(topk, user_ids, history)
    unknown_items = (topk != PAD) & ~np.isin(topk, history.item_ids)
    if unknown_items.any():
        raise ValueError(
            f"the model recommended items absent from the interactions, e.g. {topk[unknown_items][:5].tolist()}"
        )
    return TopKLists(user_ids, topk)


def write_topk(
    recommender_factory: RecommenderFactory | None,
    interactions_csv: str | os.PathLike,
    users_txt: str | os.PathLike,
    k: int,
    out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """Read and validate both inputs, recommend, and write out_csv atomically; returns its rows.

    recommender_factory=None uses default_recommender_factory (EASE).
    """
    interactions = read_interactions_csv(interactions_csv)
    if interactions.empty:
        raise InputFileError(interactions_csv, None, None, "no interactions after the header")
    users = read_users_file(users_txt)
    lists = recommend_topk(recommender_factory or default_recommender_factory, interactions, users, k)
    rows = lists.to_frame()
    out = Path(out_csv)
    # Write beside the target and rename: a reader never sees a half-written file.
    fd, tmp = tempfile.mkstemp(prefix=out.name + ".", suffix=".tmp", dir=out.parent if str(out.parent) else ".")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            rows.to_csv(handle, index=False)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows
