"""Ranking features: tables computed from an interaction history, and their assembly per pair.

`FeatureStore.build(history, items, users, config)` turns a history (user_id, item_id, rating,
timestamp) into lookup tables. Item statistics are kept as per-item sorted timestamps with
prefix sums, so counts, mean ratings and first/last-seen are exact *as of any time*: each
(user, item) pair is featurised as of its own request time (`now`), which is how training
examples use per-user cutoffs and how serving uses the request clock. User tables (history,
genre and creator affinity, co-occurrence with the user's items) reflect the history given.

`RankingFeatureAssembler` is the Hydrator over those tables. Every feature it produces is
declared once, in `declare_features`; the assembler checks at construction that what it
computes is exactly what is declared, and the model is built from the same `FeatureSchema`,
so a mismatched graph fails when built, not at the first request.

Example:
    store = FeatureStore.build(train_history, ds.items, ds.users, RankingFeatureConfig())
    assembler = RankingFeatureAssembler(store)
    columns = assembler.hydrate(FeedQuery(user_id=1, now=store.as_of), candidates)
"""
from __future__ import annotations

import atexit
import copy
import json
import logging
import threading
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from app.pipeline.candidates import Candidates, FeedQuery
from app.ranking.config import RankingFeatureConfig
from app.shared_arrays import load_arrays, save_arrays

log = logging.getLogger(__name__)

DAY = 86_400.0
_TS_BITS = 34  # timestamps (relative to the store's origin) must fit below 2**34 s ≈ 544 years
_AGE_BUCKETS = np.array([18, 25, 35, 45, 50, 56], dtype=np.float32)
_UNKNOWN = 0  # categorical index shared by every unknown / missing value
TABLES_DIR = "feature_tables"  # one .npy per table, memory-mapped at load (app/shared_arrays.py)
# The model inputs RankingFeatureRows attaches: one matrix row per candidate, read by the pre-ranker and the DCN.
DENSE_ROWS, CATEGORICAL_ROWS = "ranking_dense_rows", "ranking_categorical_rows"


@dataclass(frozen=True)
class FeatureDef:
    name: str
    kind: str  # "dense" or "categorical"
    group: str  # user | item | cross | source
    description: str


def declare_features(config: RankingFeatureConfig) -> tuple[FeatureDef, ...]:
    """The one declaration of every ranking feature, in model-input order."""
    d = FeatureDef
    windows = tuple(
        d(f"item_log_count_{_window_tag(w)}", "dense", "item", f"log1p interactions in the {w:g} days before now")
        for w in config.window_days
    )
    sources = tuple(
        d(f"src_{name}", "dense", "source", f"score from retrieval source {name!r} (0 when absent)")
        for name in config.source_names
    )
    return (
        d("user_log_count", "dense", "user", "log1p history length"),
        d("user_mean_rating", "dense", "user", "mean rating, shrunk to the global mean"),
        d("user_like_rate", "dense", "user", "share of ratings >= 4, shrunk to the global share"),
        d("user_log_span_days", "dense", "user", "log1p days between first and last interaction"),
        d("user_age", "dense", "user", "age in years (0 unknown)"),
        d("user_mean_item_pop", "dense", "user", "mean log1p popularity of the user's items"),
        d("item_log_count", "dense", "item", "log1p interactions in the whole history snapshot"),
        d("item_log_count_asof", "dense", "item", "log1p interactions up to now"),
        *windows,
        d("item_trend", "dense", "item", "log1p(shortest window) - log1p(longest window count / ratio)"),
        d("item_log_age_days", "dense", "item", "log1p days since the item's first interaction (0 unseen)"),
        d("item_log_idle_days", "dense", "item", "log1p days since the item's latest interaction before now"),
        d("item_mean_rating", "dense", "item", "mean rating up to now, shrunk to the global mean"),
        d("item_like_rate", "dense", "item", "share of ratings >= 4 up to now, shrunk"),
        d("item_release_year", "dense", "item", "release year (history median when unknown)"),
        d("item_min_age", "dense", "item", "minimum viewer age"),
        d("genre_affinity", "dense", "cross", "mean over the item's genres of the user's share of that genre"),
        d("genre_affinity_max", "dense", "cross", "max over the item's genres of the user's share"),
        d("creator_log_count", "dense", "cross", "log1p the user's items by the item's creator"),
        d("creator_share", "dense", "cross", "share of the user's items by the item's creator"),
        d("cooc_sum", "dense", "cross", "sum of co-occurrence cosines between the item and the user's items"),
        d("cooc_mean", "dense", "cross", "cooc_sum / history length"),
        d("cooc_recent", "dense", "cross", "co-occurrence with the user's latest `recent_items` items"),
        d("cf_score", "dense", "cross", "item-item regression score x_u·B[:, i] (EASE closed form, L2 cf_l2)"),
        d("year_gap", "dense", "cross", "item release year minus the user's mean release year"),
        *sources,
        d("n_sources", "dense", "source", "retrieval sources that produced the candidate (0 when absent)"),
        d("item_id", "categorical", "item", "item id + 1 (0 unknown)"),
        d("item_content_rating", "categorical", "item", "content rating code + 1"),
        d("user_gender", "categorical", "user", "gender code + 1"),
        d("user_occupation", "categorical", "user", "occupation code + 1"),
        d("user_age_bucket", "categorical", "user", "age bucket + 1 (<18, 18-24, ..., 56+)"),
    )


def _window_tag(days: float) -> str:
    return f"{days:g}d".replace(".", "p")


@dataclass(frozen=True)
class FeatureSchema:
    """Model-input layout: dense names in column order, categorical names with cardinalities."""

    dense: tuple[str, ...]
    categorical: tuple[tuple[str, int], ...]

    @property
    def categorical_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.categorical)

    @property
    def names(self) -> tuple[str, ...]:
        return self.dense + self.categorical_names

    def to_json(self) -> dict:
        return {"dense": list(self.dense), "categorical": [list(c) for c in self.categorical]}

    @classmethod
    def from_json(cls, data: dict) -> FeatureSchema:
        return cls(tuple(data["dense"]), tuple((str(n), int(c)) for n, c in data["categorical"]))


@dataclass
class FeatureBatch:
    """Model inputs for many (user, item) pairs: float32 dense (n, d) and int64 categorical (n, c)."""

    dense: np.ndarray
    categorical: np.ndarray

    def __len__(self) -> int:
        return len(self.dense)

    def columns(self, schema: FeatureSchema) -> dict[str, np.ndarray]:
        out = {name: self.dense[:, j] for j, name in enumerate(schema.dense)}
        out.update({name: self.categorical[:, j] for j, name in enumerate(schema.categorical_names)})
        return out

    @classmethod
    def from_columns(cls, columns: dict[str, np.ndarray], schema: FeatureSchema) -> FeatureBatch:
        missing = [n for n in schema.names if n not in columns]
        if missing:
            raise KeyError(f"candidates lack ranking features {missing[:8]} (run the RankingFeatureAssembler first)")
        n = len(columns[schema.names[0]]) if schema.names else 0
        dense = np.empty((n, len(schema.dense)), dtype=np.float32)
        for j, name in enumerate(schema.dense):
            dense[:, j] = columns[name]
        categorical = np.empty((n, len(schema.categorical)), dtype=np.int64)
        for j, name in enumerate(schema.categorical_names):
            categorical[:, j] = columns[name]
        return cls(dense, categorical)

    @staticmethod
    def concat(parts: list[FeatureBatch]) -> FeatureBatch:
        return FeatureBatch(np.concatenate([p.dense for p in parts]), np.concatenate([p.categorical for p in parts]))

    @classmethod
    def from_rows(cls, candidates: Sequence[Candidates], schema: FeatureSchema) -> FeatureBatch | None:
        """The stacked rows `RankingFeatureRows` attached to every request's candidates; None when
        any request lacks them."""
        if not candidates or any(DENSE_ROWS not in c.features or CATEGORICAL_ROWS not in c.features
                                 for c in candidates):
            return None
        batch = cls(np.concatenate([c.features[DENSE_ROWS] for c in candidates]),
                    np.concatenate([c.features[CATEGORICAL_ROWS] for c in candidates]))
        widths, expected = (batch.dense.shape[1], batch.categorical.shape[1]), (len(schema.dense), len(schema.categorical))
        if widths != expected:
            raise ValueError(f"candidates carry feature rows of {widths[0]} dense and {widths[1]} categorical "
                             f"columns, the model reads {expected[0]} and {expected[1]}")
        return batch


def _codes(values: pd.Series, vocabulary: list[str]) -> np.ndarray:
    index = {v: i + 1 for i, v in enumerate(vocabulary)}
    return np.fromiter((index.get(str(v), _UNKNOWN) for v in values), dtype=np.int64, count=len(values))


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((values.astype(np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.sort_indices()
    return m


@dataclass(frozen=True)
class _ItemColumns:
    """Item-only feature columns of every item slot as of `moment`, plus a last row for unknown items."""

    moment: float
    columns: dict[str, np.ndarray]

    def gather(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        return {name: column[rows] for name, column in self.columns.items()}


# Builds under way, joined at interpreter exit: a daemon thread still inside numpy when the
# interpreter tears down can crash the process (seen once as a segfault after a test run).
_BUILDERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
BUILD_JOIN_AT_EXIT_S = 30.0


@atexit.register
def _join_builders() -> None:
    for builder in list(_BUILDERS):
        builder.join(BUILD_JOIN_AT_EXIT_S)


class ItemFeatureTable:
    """The item-only ranking features (window counts, age, idleness, rating means, content) of
    every item slot as of one moment, for serving.

    Why: every candidate of a served request shares the request's time, and these features depend
    on the item and that time alone, so a table built once per `refresh_s` turns about a third of
    the feature assembly into one gather per column. Rows are served as of a moment m with
    m <= the request's time < m + 2 x refresh_s: a request past m + refresh_s starts the next table
    in a background thread while requests read the current one, and a request outside the range
    (or before the first table is ready) is computed exactly. No request waits for a build."""

    def __init__(self, store: FeatureStore) -> None:
        self._store = store
        self._current: _ItemColumns | None = None
        self._lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._failed_at: float | None = None  # the moment of the last failed build: no retry within a refresh

    def __getstate__(self) -> dict:
        return {"_store": self._store}  # a copy (pickled to a worker) builds its own table

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["_store"])

    def rows_for(self, now_rel: np.ndarray, refresh_s: float) -> _ItemColumns | None:
        """The table to gather from for pairs at `now_rel` (seconds since the store's origin), or None."""
        earliest, latest = float(np.min(now_rel)), float(np.max(now_rel))
        current = self._current
        retry = self._failed_at is None or latest >= self._failed_at + refresh_s
        if (current is None or latest >= current.moment + refresh_s) and retry:
            self._start_build(latest)
        if current is None or earliest < current.moment or latest >= current.moment + 2 * refresh_s:
            return None
        return current

    def wait(self, timeout: float | None = None) -> None:
        """Until the build under way (if any) is done: for tests and benchmarks' warm-up."""
        builder = self._builder
        if builder is not None:
            builder.join(timeout)

    def _start_build(self, moment: float) -> None:
        with self._lock:
            if self._builder is not None and self._builder.is_alive():
                return
            self._builder = threading.Thread(target=self._build, args=(moment,), name="item-feature-table", daemon=True)
            self._builder.start()
            _BUILDERS.add(self._builder)

    def _build(self, moment: float) -> None:
        try:
            store, n = self._store, self._store.n_item_slots
            slots = np.append(np.arange(n, dtype=np.int64), 0)  # the last row: an unknown item
            known = np.append(np.ones(n, bool), False)
            columns = store.item_features(slots, known, np.float64(moment), one_moment=True)
            self._current = _ItemColumns(moment, {k: np.ascontiguousarray(v, np.float32) for k, v in columns.items()})
            self._failed_at = None
        except Exception:  # noqa: BLE001 - requests keep computing exactly
            self._failed_at = moment
            log.exception("building the item feature table failed; item features are computed per request")


class FeatureStore:
    """Lookup tables built from one history snapshot; arrays indexed by user id / item id."""

    _ARRAYS = (
        "item_keys", "item_ts", "item_ptr", "item_rating_cum", "item_like_cum", "item_total",
        "item_year", "item_min_age", "item_content_rating", "item_creator", "item_topics",
        "user_ptr", "user_items", "user_ts", "user_mean_rating", "user_like_rate", "user_log_span_days",
        "user_age", "user_gender", "user_occupation", "user_mean_item_pop", "user_mean_year", "user_genre",
        "user_creator_keys", "user_creator_counts",
        "cooc_data", "cooc_indices", "cooc_indptr", "cf_weights",
    )

    def __init__(self, config: RankingFeatureConfig, meta: dict, arrays: dict[str, np.ndarray]) -> None:
        self.config = config
        self.meta = meta
        for name in self._ARRAYS:
            setattr(self, name, arrays[name])
        n = self.n_item_slots
        self.published: _PublishedRows | None = None  # items published since the snapshot
        self.item_table = ItemFeatureTable(self)  # shared with copies: it depends on the snapshot alone
        self.cooc = sp.csr_matrix((self.cooc_data, self.cooc_indices, self.cooc_indptr), shape=(n, n))

    # -- sizes and metadata -------------------------------------------------------------------
    @property
    def n_item_slots(self) -> int:
        return int(self.meta["n_item_slots"])

    @property
    def n_user_slots(self) -> int:
        return int(self.meta["n_user_slots"])

    @property
    def as_of(self) -> float:
        """Latest timestamp in the history: the default request time."""
        return float(self.meta["as_of"])

    @property
    def origin(self) -> int:
        return int(self.meta["origin"])

    def cardinalities(self) -> dict[str, int]:
        return {
            "item_id": self.n_item_slots + 1 if self.config.item_id_embedding else 1,
            "item_content_rating": len(self.meta["content_ratings"]) + 1,
            "user_gender": len(self.meta["genders"]) + 1,
            "user_occupation": len(self.meta["occupations"]) + 1,
            "user_age_bucket": len(_AGE_BUCKETS) + 2,
        }

    def schema(self) -> FeatureSchema:
        defs = declare_features(self.config)
        cards = self.cardinalities()
        return FeatureSchema(
            tuple(d.name for d in defs if d.kind == "dense"),
            tuple((d.name, cards[d.name]) for d in defs if d.kind == "categorical"),
        )

    def user_history(self, user_id: int) -> np.ndarray:
        """The user's items in the snapshot, oldest first (empty for unknown users)."""
        if not 0 <= user_id < self.n_user_slots:
            return np.zeros(0, dtype=np.int64)
        return self.user_items[self.user_ptr[user_id]:self.user_ptr[user_id + 1]]

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        history: pd.DataFrame,
        items: pd.DataFrame,
        users: pd.DataFrame,
        config: RankingFeatureConfig | None = None,
    ) -> FeatureStore:
        """Tables from `history` (user_id, item_id, rating, timestamp) and the catalogue tables."""
        config = config or RankingFeatureConfig()
        n_items = int(max(items["item_id"].max(), history["item_id"].max() if len(history) else 0)) + 1
        n_users = int(max(users["user_id"].max(), history["user_id"].max() if len(history) else 0)) + 1
        # Ties broken by item id: the same order the evaluation split uses.
        h = history.sort_values(["user_id", "timestamp", "item_id"], kind="stable")
        u = h["user_id"].to_numpy(np.int64)
        i = h["item_id"].to_numpy(np.int64)
        r = h["rating"].to_numpy(np.float64)
        ts = h["timestamp"].to_numpy(np.int64)
        origin = int(ts.min()) - 1 if len(ts) else 0
        like = (r >= 4.0).astype(np.float64)
        mean_r = float(r.mean()) if len(r) else 3.5
        mean_like = float(like.mean()) if len(r) else 0.5
        prior = config.rating_prior_count

        # Item tables: per-item sorted timestamps + prefix sums → exact statistics as of any time.
        order = np.lexsort((ts, i))
        item_ts = ts[order] - origin
        item_keys = (i[order] << _TS_BITS) + item_ts
        item_ptr = np.zeros(n_items + 1, dtype=np.int64)
        np.add.at(item_ptr, i + 1, 1)
        item_ptr = np.cumsum(item_ptr)
        item_total = np.diff(item_ptr).astype(np.float32)
        rating_cum = np.concatenate([[0.0], np.cumsum(r[order])])
        like_cum = np.concatenate([[0.0], np.cumsum(like[order])])

        catalogue = items.set_index("item_id")
        ids = catalogue.index.to_numpy(np.int64)
        years = pd.to_numeric(catalogue["release_year"], errors="coerce").to_numpy(np.float64)
        median_year = float(np.nanmedian(years)) if np.isfinite(years).any() else 0.0
        item_year = np.full(n_items, median_year, dtype=np.float32)
        item_year[ids] = np.where(np.isfinite(years), years, median_year)
        item_min_age = np.zeros(n_items, dtype=np.float32)
        item_min_age[ids] = catalogue["min_age"].to_numpy(np.float32)
        content_ratings = sorted({str(v) for v in catalogue["content_rating"]})
        item_content_rating = np.zeros(n_items, dtype=np.int64)
        item_content_rating[ids] = _codes(catalogue["content_rating"], content_ratings)
        item_creator = np.full(n_items, -1, dtype=np.int64)
        item_creator[ids] = catalogue["creator_id"].to_numpy(np.int64)
        topics = sorted({t for ts_ in catalogue["topics"] for t in ts_})
        topic_index = {t: k for k, t in enumerate(topics)}
        item_topics = np.zeros((n_items, len(topics)), dtype=np.float32)
        for item_id, item_topic_list in zip(ids, catalogue["topics"]):
            for t in item_topic_list:
                item_topics[item_id, topic_index[t]] = 1.0

        # User tables.
        user_ptr = np.zeros(n_users + 1, dtype=np.int64)
        np.add.at(user_ptr, u + 1, 1)
        user_ptr = np.cumsum(user_ptr)
        counts = np.diff(user_ptr).astype(np.float64)
        sums = np.bincount(u, weights=r, minlength=n_users)
        likes = np.bincount(u, weights=like, minlength=n_users)
        user_mean_rating = ((sums + prior * mean_r) / (counts + prior)).astype(np.float32)
        user_like_rate = ((likes + prior * mean_like) / (counts + prior)).astype(np.float32)
        first = np.full(n_users, 0, dtype=np.int64)
        last = np.full(n_users, 0, dtype=np.int64)
        has = counts > 0
        first[has] = ts[user_ptr[:-1][has]]
        last[has] = ts[user_ptr[1:][has] - 1]
        user_log_span_days = np.log1p((last - first) / DAY).astype(np.float32)
        item_log_pop = np.log1p(item_total)
        safe = np.maximum(counts, 1.0)
        user_mean_item_pop = (np.bincount(u, weights=item_log_pop[i], minlength=n_users) / safe).astype(np.float32)
        year_sums = np.bincount(u, weights=item_year[i], minlength=n_users)
        user_mean_year = np.where(has, year_sums / safe, median_year).astype(np.float32)
        user_genre = np.zeros((n_users, len(topics)), dtype=np.float32)
        np.add.at(user_genre, u, item_topics[i])
        user_genre /= safe[:, None].astype(np.float32)

        uid = users["user_id"].to_numpy(np.int64)
        user_age = np.zeros(n_users, dtype=np.float32)
        user_age[uid] = pd.to_numeric(users["age"], errors="coerce").fillna(0).to_numpy(np.float32)
        genders = sorted({str(v) for v in users["gender"]})
        occupations = sorted({str(v) for v in users["occupation"]})
        user_gender = np.zeros(n_users, dtype=np.int64)
        user_gender[uid] = _codes(users["gender"], genders)
        user_occupation = np.zeros(n_users, dtype=np.int64)
        user_occupation[uid] = _codes(users["occupation"], occupations)

        # User–creator affinity, sparse: sorted keys (user * n_creator_slots + creator) with counts.
        creators = item_creator[i]
        n_creator_slots = int(max(item_creator.max(), 0)) + 1
        known = creators >= 0
        keys, key_counts = np.unique(u[known] * n_creator_slots + creators[known], return_counts=True)

        cooc = _cooccurrence(u, i, n_users, n_items, config.cooc_shrink, config.cooc_neighbours)
        cf_weights = (
            _item_regression(u, i, n_users, n_items, config.cf_l2)
            if n_items <= config.cf_max_items else np.zeros((0, 0), np.float32)
        )
        meta = {
            "n_item_slots": n_items, "n_user_slots": n_users, "as_of": float(ts.max()) if len(ts) else 0.0,
            "origin": origin, "n_creator_slots": n_creator_slots, "mean_rating": mean_r, "mean_like": mean_like,
            "content_ratings": content_ratings, "genders": genders, "occupations": occupations, "topics": topics,
        }
        arrays = dict(
            item_keys=item_keys, item_ts=item_ts, item_ptr=item_ptr, item_rating_cum=rating_cum,
            item_like_cum=like_cum, item_total=item_total, item_year=item_year, item_min_age=item_min_age,
            item_content_rating=item_content_rating, item_creator=item_creator, item_topics=item_topics,
            user_ptr=user_ptr, user_items=i, user_ts=ts, user_mean_rating=user_mean_rating,
            user_like_rate=user_like_rate, user_log_span_days=user_log_span_days, user_age=user_age,
            user_gender=user_gender, user_occupation=user_occupation, user_mean_item_pop=user_mean_item_pop,
            user_mean_year=user_mean_year, user_genre=user_genre,
            user_creator_keys=keys.astype(np.int64), user_creator_counts=key_counts.astype(np.float32),
            cooc_data=cooc.data, cooc_indices=cooc.indices, cooc_indptr=cooc.indptr, cf_weights=cf_weights,
        )
        return cls(config, meta, arrays)

    # -- items published after the snapshot -----------------------------------------------------
    def with_published(self, items: pd.DataFrame) -> FeatureStore:
        """This store knowing items published since its snapshot (app/freshness/published.py's
        frame: item_id is the models' index, at or past `n_item_slots`). Such an item has no
        interactions, so its counts, ratings, co-occurrence and id embedding stay the unknown
        item's; its content (release year, minimum age, content rating, creator, topics) is its
        own, and so are the cross features built on it (topic affinity, creator affinity, year gap)."""
        out = copy.copy(self)
        items = items[items["item_id"] >= self.n_item_slots]
        out.published = None if items.empty else _PublishedRows.build(items, self)
        if out.published is not None:
            topics = np.zeros((out.published.end, self.item_topics.shape[1]), np.float32)
            topics[: self.n_item_slots] = self.item_topics[: self.n_item_slots]
            topics[self.n_item_slots:] = out.published.topics
            out.item_topics_all = topics
        return out

    @property
    def topics_by_item(self) -> np.ndarray:
        """Topic rows of every item, published ones included (the session-interest term)."""
        return self.item_topics if self.published is None else self.item_topics_all

    def _fill_published(self, f: dict[str, np.ndarray], items: np.ndarray, us: np.ndarray, user_ok: np.ndarray,
                        ucount: np.ndarray) -> None:
        """Content features of the published items among `items` (see `with_published`)."""
        pub = self.published
        rows = np.flatnonzero((items >= pub.first) & (items < pub.end))
        if not len(rows):
            return
        k = items[rows] - pub.first
        known = pub.known[k]
        rows, k = rows[known], k[known]
        u, ok = us[rows], user_ok[rows]
        f["item_release_year"][rows] = pub.year[k]
        f["item_min_age"][rows] = pub.min_age[k]
        f["item_content_rating"][rows] = pub.content_rating[k]
        topics, shares = pub.topics[k], self.user_genre[u] * ok[:, None]
        weighted = topics * shares
        f["genre_affinity"][rows] = weighted.sum(axis=1) / np.maximum(topics.sum(axis=1), 1.0)
        if weighted.shape[1]:
            f["genre_affinity_max"][rows] = weighted.max(axis=1)
        creator = pub.creator[k]
        key = u * int(self.meta["n_creator_slots"]) + creator
        if len(self.user_creator_keys):
            pos = np.minimum(np.searchsorted(self.user_creator_keys, key), len(self.user_creator_keys) - 1)
            hit = ok & (creator >= 0) & (self.user_creator_keys[pos] == key)
            ccount = np.where(hit, self.user_creator_counts[pos], 0.0)
            f["creator_log_count"][rows] = np.log1p(ccount)
            f["creator_share"][rows] = ccount / np.maximum(ucount[rows], 1.0)
        f["year_gap"][rows] = np.where(ok, pub.year[k] - self.user_mean_year[u], 0.0)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_arrays(directory / TABLES_DIR, {n: getattr(self, n) for n in self._ARRAYS})
        (directory / "feature_meta.json").write_text(
            json.dumps({"meta": self.meta, "config": self.config.model_dump(mode="json")}, indent=1)
        )

    @classmethod
    def load(cls, directory: str | Path) -> FeatureStore:
        directory = Path(directory)
        saved = json.loads((directory / "feature_meta.json").read_text())
        if (directory / TABLES_DIR).is_dir():  # mapped read-only: shared by the node's replicas
            arrays = load_arrays(directory / TABLES_DIR, cls._ARRAYS)
        else:  # artifacts written before the tables were mapped
            with np.load(directory / "feature_tables.npz") as tables:
                arrays = {n: tables[n] for n in cls._ARRAYS}
        return cls(RankingFeatureConfig.model_validate(saved["config"]), saved["meta"], arrays)

    # -- per-pair features ---------------------------------------------------------------------
    def item_features(self, it: np.ndarray, item_ok: np.ndarray, now_rel: np.ndarray | float,
                      one_moment: bool = False) -> dict[str, np.ndarray]:
        """The features that depend on the item and the time alone, for each row (`it`: item slots,
        0 where not `item_ok`; `now_rel`: seconds since the origin, per row or one for all).
        `one_moment` (the item table: every slot at one time): the interactions up to a time are
        counted in one pass over all of them instead of searched for item by item."""
        cfg, meta = self.config, self.meta
        n = len(it)
        now_rel = np.broadcast_to(np.asarray(now_rel, dtype=np.float64), (n,))
        f: dict[str, np.ndarray] = {}
        start = self.item_ptr[it]
        if one_moment:
            item_of, ts_of = self.item_keys >> _TS_BITS, self.item_keys & ((1 << _TS_BITS) - 1)

            def upto(t: np.ndarray) -> np.ndarray:  # index one past the item's last interaction at or before t
                limit = np.floor(max(float(t[0]), -1.0)) if n else -1.0
                return start + np.bincount(item_of[ts_of <= limit], minlength=self.n_item_slots)[it]
        else:
            base = it << _TS_BITS
            # Needles in item order: searchsorted over the (item, time) keys then walks forward
            # instead of jumping at random, ≈ 2× faster at 3M interactions (most of this method's time).
            by_item = np.argsort(base, kind="stable")

            def upto(t: np.ndarray) -> np.ndarray:  # index one past the item's last interaction at or before t
                key = base + np.floor(np.maximum(t, -1)).astype(np.int64)
                found = np.empty(n, np.int64)
                found[by_item] = np.searchsorted(self.item_keys, key[by_item], side="right")
                return np.maximum(found, start)

        end_now = np.where(item_ok, upto(now_rel), start)
        c_asof = (end_now - start).astype(np.float64)
        f["item_log_count"] = np.where(item_ok, np.log1p(self.item_total[it]), 0.0)
        f["item_log_count_asof"] = np.log1p(c_asof)
        window_logs = []
        for w in cfg.window_days:
            c = np.where(item_ok, end_now - upto(now_rel - w * DAY), 0).astype(np.float64)
            window_logs.append(np.log1p(c))
            f[f"item_log_count_{_window_tag(w)}"] = window_logs[-1]
        ratio = cfg.window_days[-1] / cfg.window_days[0]
        c_long = np.expm1(window_logs[-1])
        f["item_trend"] = window_logs[0] - np.log1p(c_long / ratio)
        seen = c_asof > 0
        first_ts = self.item_ts[np.minimum(start, len(self.item_ts) - 1)] if len(self.item_ts) else np.zeros(n)
        last_ts = self.item_ts[np.maximum(end_now - 1, 0)] if len(self.item_ts) else np.zeros(n)
        f["item_log_age_days"] = np.where(seen, np.log1p(np.maximum(now_rel - first_ts, 0) / DAY), 0.0)
        f["item_log_idle_days"] = np.where(seen, np.log1p(np.maximum(now_rel - last_ts, 0) / DAY), 0.0)
        prior = cfg.rating_prior_count
        r_sum = self.item_rating_cum[end_now] - self.item_rating_cum[start]
        l_sum = self.item_like_cum[end_now] - self.item_like_cum[start]
        f["item_mean_rating"] = (r_sum + prior * meta["mean_rating"]) / (c_asof + prior)
        f["item_like_rate"] = (l_sum + prior * meta["mean_like"]) / (c_asof + prior)
        f["item_release_year"] = self.item_year[it]
        f["item_min_age"] = np.where(item_ok, self.item_min_age[it], 0.0)
        return f

    def pair_features(
        self, user_ids: np.ndarray, item_ids: np.ndarray, now: np.ndarray,
        fresh: Mapping[int, Sequence[int]] | None = None, item_refresh_s: float = 0.0,
    ) -> dict[str, np.ndarray]:
        """User, item and cross features of each (user_ids[k], item_ids[k]) pair as of now[k].

        `fresh` (user → items engaged since the snapshot, newest first) extends those users'
        histories for the history-driven features (see `_with_fresh_history`). `item_refresh_s` > 0
        (serving): the item-only features come from a table of every item as of a moment up to
        2 × item_refresh_s before the pairs' times (`ItemFeatureTable`), gathered instead of computed."""
        users = np.asarray(user_ids, dtype=np.int64)
        items = np.asarray(item_ids, dtype=np.int64)
        now_rel = np.clip(np.asarray(now, dtype=np.float64) - self.origin, -1, 2**_TS_BITS - 1)
        n = len(items)
        item_ok = (items >= 0) & (items < self.n_item_slots)
        user_ok = (users >= 0) & (users < self.n_user_slots)
        it = np.where(item_ok, items, 0)
        us = np.where(user_ok, users, 0)
        f: dict[str, np.ndarray] = {}

        # Users (unknown users: zeros, i.e. the population-level neutral after normalisation).
        cfg, meta = self.config, self.meta
        ucount = np.where(user_ok, np.diff(self.user_ptr)[us], 0).astype(np.float64)
        f["user_log_count"] = np.log1p(ucount)
        f["user_mean_rating"] = np.where(user_ok, self.user_mean_rating[us], meta["mean_rating"])
        f["user_like_rate"] = np.where(user_ok, self.user_like_rate[us], meta["mean_like"])
        f["user_log_span_days"] = np.where(user_ok, self.user_log_span_days[us], 0.0)
        f["user_age"] = np.where(user_ok, self.user_age[us], 0.0)
        f["user_mean_item_pop"] = np.where(user_ok, self.user_mean_item_pop[us], 0.0)

        # Items, as of each pair's time (or of the table's moment).
        table = self.item_table.rows_for(now_rel, item_refresh_s) if item_refresh_s > 0 and n else None
        if table is None:
            f.update(self.item_features(it, item_ok, now_rel))
        else:
            f.update(table.gather(np.where(item_ok, it, self.n_item_slots)))
        year = f["item_release_year"]

        # Cross features.
        item_topics = self.item_topics[it] * item_ok[:, None]
        shares = self.user_genre[us] * user_ok[:, None]
        n_topics = item_topics.sum(axis=1)
        f["genre_affinity"] = (item_topics * shares).sum(axis=1) / np.maximum(n_topics, 1.0)
        f["genre_affinity_max"] = (item_topics * shares).max(axis=1) if item_topics.shape[1] else np.zeros(n)
        creator = np.where(item_ok, self.item_creator[it], -1)
        key = us * int(meta["n_creator_slots"]) + creator
        pos = np.searchsorted(self.user_creator_keys, key)
        pos_c = np.minimum(pos, max(len(self.user_creator_keys) - 1, 0))
        hit = user_ok & (creator >= 0) & (len(self.user_creator_keys) > 0)
        if len(self.user_creator_keys):
            hit &= self.user_creator_keys[pos_c] == key
            ccount = np.where(hit, self.user_creator_counts[pos_c], 0.0)
        else:
            ccount = np.zeros(n)
        f["creator_log_count"] = np.log1p(ccount)
        f["creator_share"] = ccount / np.maximum(ucount, 1.0)
        cooc_sum, cooc_recent, cf_score = self._history_scores(us, it, user_ok & item_ok)
        f["cooc_sum"] = cooc_sum
        f["cooc_mean"] = cooc_sum / np.maximum(ucount, 1.0)
        f["cooc_recent"] = cooc_recent
        f["cf_score"] = cf_score
        f["year_gap"] = np.where(user_ok & item_ok, year - self.user_mean_year[us], 0.0)

        # Categorical codes (0 = unknown).
        f["item_id"] = np.where(item_ok & cfg.item_id_embedding, it + 1, _UNKNOWN)
        f["item_content_rating"] = np.where(item_ok, self.item_content_rating[it], _UNKNOWN)
        f["user_gender"] = np.where(user_ok, self.user_gender[us], _UNKNOWN)
        f["user_occupation"] = np.where(user_ok, self.user_occupation[us], _UNKNOWN)
        age = np.where(user_ok, self.user_age[us], 0.0)
        f["user_age_bucket"] = np.where(age > 0, np.searchsorted(_AGE_BUCKETS, age, side="right") + 1, _UNKNOWN)
        for user, items_since in (fresh or {}).items():
            if len(items_since):
                self._with_fresh_history(f, users, items, int(user), np.asarray(items_since, dtype=np.int64))
        if self.published is not None:
            self._fill_published(f, items, us, user_ok, ucount)
        return f

    def _with_fresh_history(self, f: dict[str, np.ndarray], users: np.ndarray, items: np.ndarray,
                            user: int, fresh_newest_first: np.ndarray) -> None:
        """Recompute, in place, the features of `user`'s pairs that read the user's history
        (count, genre shares, creator counts, co-occurrence, item-item regression, mean year) over
        the snapshot history followed by the fresh items. One user's rows: O(history × catalogue)."""
        rows = np.flatnonzero(users == user)
        fresh = fresh_newest_first[(fresh_newest_first >= 0) & (fresh_newest_first < self.n_item_slots)][::-1]
        if not len(rows) or not len(fresh):
            return
        hist = np.concatenate([self.user_history(user), fresh])  # oldest first, like user_history
        it = items[rows]
        ok = (it >= 0) & (it < self.n_item_slots)
        it = np.where(ok, it, 0)
        n_hist = float(len(hist))
        f["user_log_count"][rows] = np.log1p(n_hist)
        shares = self.item_topics[hist].mean(axis=0)
        item_topics = self.item_topics[it] * ok[:, None]
        weighted = item_topics * shares[None, :]
        f["genre_affinity"][rows] = weighted.sum(axis=1) / np.maximum(item_topics.sum(axis=1), 1.0)
        if weighted.shape[1]:
            f["genre_affinity_max"][rows] = weighted.max(axis=1)
        creators = self.item_creator[hist]
        creators = creators[creators >= 0]
        counts = np.bincount(creators, minlength=int(self.meta["n_creator_slots"])) if len(creators) else None
        item_creators = np.where(ok, self.item_creator[it], -1)
        ccount = np.where(item_creators >= 0, counts[np.maximum(item_creators, 0)], 0.0) if counts is not None else 0.0
        f["creator_log_count"][rows] = np.log1p(ccount)
        f["creator_share"][rows] = ccount / n_hist
        cooc_all = np.asarray(self.cooc[hist].sum(axis=0)).ravel()
        cooc_recent = np.asarray(self.cooc[hist[-self.config.recent_items:]].sum(axis=0)).ravel()
        f["cooc_sum"][rows] = cooc_all[it] * ok
        f["cooc_mean"][rows] = cooc_all[it] * ok / n_hist
        f["cooc_recent"][rows] = cooc_recent[it] * ok
        if self.cf_weights.size:
            f["cf_score"][rows] = self.cf_weights[hist].sum(axis=0)[it] * ok
        f["year_gap"][rows] = np.where(ok, self.item_year[it] - self.item_year[hist].mean(), 0.0)

    def _history_scores(self, users: np.ndarray, items: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, ...]:
        """Co-occurrence of each item with its user's whole history and with the latest items,
        and the item-item regression score over the whole history."""
        uniq, row = np.unique(users, return_inverse=True)
        lengths = self.user_ptr[uniq + 1] - self.user_ptr[uniq]
        recent = np.minimum(lengths, self.config.recent_items)
        results = []
        for k, take in enumerate((lengths, recent)):
            starts = self.user_ptr[uniq + 1] - take
            offsets = np.repeat(starts - np.cumsum(take) + take, take) + np.arange(int(take.sum()))
            hist = _csr(np.repeat(np.arange(len(uniq)), take), self.user_items[offsets],
                        np.ones(int(take.sum())), (len(uniq), self.n_item_slots))
            scores = (hist @ self.cooc).tocsr()
            scores.sort_indices()
            results.append(_lookup(scores, row, items, self.n_item_slots) * ok)
            if k == 0:
                if self.cf_weights.size:
                    # (users × catalogue) dense: cheap, as cf is only kept for catalogues ≤ cf_max_items.
                    cf = np.asarray(hist @ self.cf_weights)[row, items] * ok
                else:
                    cf = np.zeros(len(items))
        return results[0], results[1], cf


@dataclass(frozen=True)
class _PublishedRows:
    """Content columns of published items, for slots first..end (gaps: `known` False)."""

    first: int
    end: int
    known: np.ndarray
    year: np.ndarray
    min_age: np.ndarray
    content_rating: np.ndarray
    creator: np.ndarray
    topics: np.ndarray

    @classmethod
    def build(cls, items: pd.DataFrame, store: FeatureStore) -> _PublishedRows:
        first = store.n_item_slots
        end = int(items["item_id"].max()) + 1
        k = items["item_id"].to_numpy(np.int64) - first
        n = end - first
        known = np.zeros(n, bool)
        known[k] = True
        year = np.zeros(n, np.float32)
        year[k] = items["release_year"].to_numpy(np.float32)
        min_age = np.zeros(n, np.float32)
        min_age[k] = items["min_age"].to_numpy(np.float32)
        rating = np.zeros(n, np.int64)
        rating[k] = _codes(items["content_rating"], list(store.meta["content_ratings"]))
        creator = np.full(n, -1, np.int64)
        # A creator the snapshot never saw has no affinity to look up (and an index past the
        # snapshot's creator slots would alias another creator's key).
        given = items["creator_id"].to_numpy(np.int64)
        creator[k] = np.where(given < int(store.meta["n_creator_slots"]), given, -1)
        column = {t: j for j, t in enumerate(store.meta["topics"])}
        topics = np.zeros((n, len(column)), np.float32)
        for row, names in zip(k.tolist(), items["topics"]):
            for name in names:
                if name in column:
                    topics[row, column[name]] = 1.0
        return cls(first, end, known, year, min_age, rating, creator, topics)


def _lookup(matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray, n_cols: int) -> np.ndarray:
    """matrix[rows[k], cols[k]] for every k, without densifying the matrix."""
    counts = np.diff(matrix.indptr)
    keys = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), counts) * n_cols + matrix.indices
    query = rows.astype(np.int64) * n_cols + cols
    pos = np.minimum(np.searchsorted(keys, query), max(len(keys) - 1, 0))
    if not len(keys):
        return np.zeros(len(query))
    return np.where(keys[pos] == query, matrix.data[pos], 0.0)


def _cooccurrence(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, shrink: float, k: int) -> sp.csr_matrix:
    """Item-item cosine on the binary user×item matrix (shrunk), top-k neighbours per row."""
    x = _csr(u, i, np.ones(len(u)), (n_users, n_items))
    x.data[:] = 1.0
    counts = np.asarray(x.sum(axis=0)).ravel()
    c = (x.T @ x).tocsr().astype(np.float32)
    c.setdiag(0.0)
    c.eliminate_zeros()
    rows = np.repeat(np.arange(n_items), np.diff(c.indptr))
    c.data = c.data / (np.sqrt(counts[rows] * counts[c.indices]) + shrink)
    keep_rows, keep_cols, keep_vals = [], [], []
    for r in range(n_items):
        lo, hi = c.indptr[r], c.indptr[r + 1]
        if hi == lo:
            continue
        vals = c.data[lo:hi]
        top = np.argpartition(-vals, k - 1)[:k] if hi - lo > k else np.arange(hi - lo)
        keep_rows.append(np.full(len(top), r))
        keep_cols.append(c.indices[lo:hi][top])
        keep_vals.append(vals[top])
    if not keep_rows:
        return sp.csr_matrix((n_items, n_items), dtype=np.float32)
    return _csr(np.concatenate(keep_rows), np.concatenate(keep_cols), np.concatenate(keep_vals), (n_items, n_items))


def _item_regression(u: np.ndarray, i: np.ndarray, n_users: int, n_items: int, l2: float) -> np.ndarray:
    """EASE weights (Steck 2019): B = I − P·diag(1/diag(P)), P = (XᵀX + λI)⁻¹, zero diagonal."""
    x = _csr(u, i, np.ones(len(u)), (n_users, n_items))
    x.data[:] = 1.0
    gram = (x.T @ x).toarray().astype(np.float64)
    gram[np.diag_indices(n_items)] += l2
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    b[np.diag_indices(n_items)] = 0.0
    return b.astype(np.float32)


class RankingFeatureAssembler:
    """Hydrator: attaches every declared ranking feature to the candidates.

    Reads `query.user_id`, `query.now` (0 → the store's snapshot time) and, when present, the
    candidates' `src_<source>` and `n_sources` feature columns (absent → 0, so the ranker runs
    without the retrieval module). Produces exactly `schema.names`.
    """

    name = "ranking_features"

    def __init__(self, store: FeatureStore, item_refresh_s: float = 0.0) -> None:
        self.store = store
        # > 0 (serving): item-only features from the store's ItemFeatureTable; 0: exact per pair.
        self.item_refresh_s = item_refresh_s
        self.schema = store.schema()
        self.source_columns = tuple(f"src_{s}" for s in store.config.source_names) + ("n_sources",)
        probe = self.store.pair_features(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
        computed = set(probe) | set(self.source_columns)
        if computed != set(self.schema.names):
            raise ValueError(
                f"feature graph broken: declared-not-computed {sorted(set(self.schema.names) - computed)}, "
                f"computed-not-declared {sorted(computed - set(self.schema.names))}"
            )

    @property
    def produces(self) -> tuple[str, ...]:
        return self.schema.names

    def request_time(self, query: FeedQuery) -> float:
        return query.now if query.now > 0 else self.store.as_of

    def batch(
        self,
        user_ids: np.ndarray,
        item_ids: np.ndarray,
        now: np.ndarray | float,
        source_columns: dict[str, np.ndarray] | None = None,
        fresh: Mapping[int, Sequence[int]] | None = None,
    ) -> FeatureBatch:
        """Model inputs for many pairs at once (the vectorised path used by training and serving)."""
        item_ids = np.asarray(item_ids, dtype=np.int64)
        n = len(item_ids)
        user_ids = np.broadcast_to(np.asarray(user_ids, dtype=np.int64), (n,))
        now = np.broadcast_to(np.asarray(now, dtype=np.float64), (n,))
        f = self.store.pair_features(user_ids, item_ids, now, fresh, self.item_refresh_s)
        source_columns = source_columns or {}
        for name in self.source_columns:
            column = source_columns.get(name)
            f[name] = np.zeros(n, np.float32) if column is None else np.nan_to_num(np.asarray(column, np.float32))
        dense = np.empty((n, len(self.schema.dense)), dtype=np.float32)
        for j, name in enumerate(self.schema.dense):
            dense[:, j] = f[name]
        categorical = np.empty((n, len(self.schema.categorical)), dtype=np.int64)
        for j, (name, cardinality) in enumerate(self.schema.categorical):
            categorical[:, j] = np.clip(f[name], 0, cardinality - 1)
        return FeatureBatch(dense, categorical)

    def batch_for_requests(self, requests: list[tuple[FeedQuery, Candidates]]) -> FeatureBatch:
        """One vectorised feature pass over every request's candidates, stacked in request order."""
        cands = [c for _, c in requests]
        users = np.concatenate([np.full(len(c), q.user_id, np.int64) for q, c in requests]) if requests else []
        now = np.concatenate([np.full(len(c), self.request_time(q)) for q, c in requests]) if requests else []
        items = np.concatenate([c.item_ids for c in cands]) if requests else np.zeros(0, np.int64)
        sources = {
            name: np.concatenate([_column(c, name) for c in cands])
            for name in self.source_columns
            if any(name in c.features for c in cands)
        }
        fresh = {q.user_id: q.fresh_item_ids for q, _ in requests if q.fresh_item_ids}
        return self.batch(np.asarray(users, np.int64), items, np.asarray(now, np.float64), sources, fresh)

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        return self.batch_for_requests([(query, candidates)]).columns(self.schema)


class RankingFeatureRows:
    """Hydrator stage: each candidate's model inputs as one row of two matrices (dense float32,
    categorical int64), assembled once for every queued request.

    Why a stage of its own: the pre-ranker reads every candidate's features and the DCN reads the
    survivors'; with the rows attached, the cut slices them and nobody featurises twice. Its
    span and stage time are the feature assembly, apart from the model passes. The rows stay
    inside ranking: `RankingPart` drops them before its candidates travel on."""

    name = "ranking_features"

    def __init__(self, assembler: RankingFeatureAssembler) -> None:
        self.assembler = assembler

    def hydrate_batch(self, requests: list[tuple[FeedQuery, Candidates]]) -> list[dict[str, np.ndarray]]:
        batch = self.assembler.batch_for_requests(requests)
        bounds = np.cumsum([0] + [len(c) for _, c in requests])
        return [{DENSE_ROWS: batch.dense[lo:hi], CATEGORICAL_ROWS: batch.categorical[lo:hi]}
                for lo, hi in zip(bounds[:-1], bounds[1:])]

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        return self.hydrate_batch([(query, candidates)])[0]


def _column(candidates: Candidates, name: str) -> np.ndarray:
    column = candidates.features.get(name)
    return np.zeros(len(candidates), np.float32) if column is None else np.asarray(column, np.float32)
