"""Candidate sources, the cross-source merge and the seen-item filter.

Sources (one `fetch(query) -> Candidates` each, every candidate tagged with the source name and
its score): `EmbeddingAnnSource` (two-tower + ANN), `SocialSource` (what friends engaged with
recently), `TrendingSource` (time-decayed counts), `CoEngagementSource` (item-to-item neighbours
of the user's recent items).

`Candidates.concat` needs the same feature columns from every source, so every source here
emits `SOURCE_FEATURES` (only the social source can set `close_friend`; the others fill False).

After the sources, a retrieval pipeline runs (order matters):
    SourceFeatureHydrator  # n_sources, src_<name> per item, over every source's row of it
    SeenItemFilter         # drop items the user has seen, before quotas spend slots on them
    SourceMerger           # one row per item (its best source), per-source quotas, total size
`merge_candidates` does the hydrate + select steps in one call for code outside a pipeline.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from app.data.friends import FriendLists
from app.pipeline.candidates import Candidates, FeedQuery
from app.retrieval.config import SourcesConfig
from app.retrieval.engagement import ItemNeighbours, RecentEngagements, TrendingCounts, decay
from app.retrieval.index import AnnIndex

SOURCE_FEATURES = ("close_friend",)  # bool: a close friend engaged with the item (collator reads it)
ANN, SOCIAL, TRENDING, COENGAGEMENT, FRESH = "ann", "social", "trending", "coengagement", "fresh"
SOURCE_NAMES = (ANN, COENGAGEMENT, SOCIAL, TRENDING, FRESH)  # also the tie-break order of the merge

UserVectorLookup = Callable[[int], "np.ndarray | None"]


def source_candidates(
    source: str, item_ids: np.ndarray, scores: np.ndarray, close_friend: np.ndarray | None = None
) -> Candidates:
    """Candidates of one source with the shared feature columns, best score first."""
    item_ids = np.asarray(item_ids, np.int64)
    scores = np.asarray(scores, np.float32)
    order = np.lexsort((item_ids, -scores))
    close = np.zeros(len(item_ids), bool) if close_friend is None else np.asarray(close_friend, bool)
    return Candidates.from_source(source, item_ids[order], scores[order]).with_features({"close_friend": close[order]})


def _aggregate(item_ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Sum scores per item and keep the k best."""
    items, inverse = np.unique(item_ids, return_inverse=True)
    totals = np.bincount(inverse, weights=scores, minlength=len(items))
    top = np.lexsort((items, -totals))[:k]
    return items[top], totals[top]


class EmbeddingAnnSource:
    """Nearest items to the user's two-tower embedding.

    The embedding is `query.user_embedding` when set (dynamic embeddings from the event
    stream), else the stored one; a user with neither gets no candidates (trending covers
    cold start). Score: inner product (cosine for normalised towers).

    Example:
        source = EmbeddingAnnSource(index, artifacts.user_embedding, SourcesConfig())
        source.fetch(FeedQuery(user_id=42))
    """

    name = ANN

    def __init__(self, index: AnnIndex, user_vectors: UserVectorLookup, config: SourcesConfig,
                 fresh=None) -> None:
        self.index = index
        self.fresh = fresh  # app.retrieval.fresh.FreshIndex: published items, searched beside the index
        self.user_vectors = user_vectors
        self.k = config.ann_k
        self.overfetch_seen = config.ann_overfetch_seen

    def fetch(self, query: FeedQuery) -> Candidates:
        vector = query.user_embedding if query.user_embedding is not None else self.user_vectors(query.user_id)
        if vector is None:
            return source_candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32))
        k = self.k + (len(query.seen_item_ids) if self.overfetch_seen else 0)
        ids, scores = self.index.search(np.asarray(vector, np.float32).reshape(1, -1), min(k, len(self.index)))
        found = ids[0] >= 0
        ids, scores = ids[0][found], scores[0][found]
        if self.fresh is not None and len(self.fresh):
            fresh_ids, fresh_scores = self.fresh.search(vector, k)
            ids, scores = np.concatenate([ids, fresh_ids]), np.concatenate([scores, fresh_scores])
            if len(ids) > k:  # the k best of both, by score
                best = np.lexsort((ids, -scores))[:k]
                ids, scores = ids[best], scores[best]
        return source_candidates(self.name, ids, scores)


class SocialGraph:
    """Friend lists with edge weights and close flags: a social_edges table's, or the dataset's
    own `friend_lists` (one CSR table per process, app/data/friends.py)."""

    def __init__(self, edges: pd.DataFrame | FriendLists) -> None:
        self._friends = edges if isinstance(edges, FriendLists) else FriendLists.from_edges(edges)

    def friends_of(self, user_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(friend ids, edge weights, close flags); empty for a user without friends."""
        return self._friends.of(user_id)


class SocialSource:
    """What friends engaged with recently: score = Σ over friends' engagements within the window
    of edge weight × 2^(−age / half-life). `close_friend` is True when any engaging friend is
    close (in the graph, or in `query.close_friend_ids`)."""

    name = SOCIAL

    def __init__(self, graph: SocialGraph, engagements: RecentEngagements, config: SourcesConfig) -> None:
        self.graph = graph
        self.engagements = engagements
        self.k = config.social_k
        self.window_s = config.social_window_s
        self.half_life_s = config.social_half_life_s
        self.per_friend = config.social_events_per_friend

    def fetch(self, query: FeedQuery) -> Candidates:
        friends, weights, close = self.graph.friends_of(query.user_id)
        item_parts, score_parts, close_parts = [], [], []
        for friend, weight, is_close in zip(friends, weights, close):
            items, ts = self.engagements.recent_items(int(friend), query.now, self.window_s, self.per_friend)
            item_parts.append(items)
            score_parts.append(weight * decay(query.now - ts, self.half_life_s))
            close_parts.append(np.full(len(items), bool(is_close) or int(friend) in query.close_friend_ids))
        if not item_parts:
            return source_candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32))
        item_ids = np.concatenate(item_parts)
        items, totals = _aggregate(item_ids, np.concatenate(score_parts), self.k)
        close_items = np.unique(item_ids[np.concatenate(close_parts)])
        return source_candidates(self.name, items, totals, np.isin(items, close_items))


class TrendingSource:
    """Items with the largest time-decayed engagement counts as of `query.now`."""

    name = TRENDING

    def __init__(self, counts: TrendingCounts, config: SourcesConfig) -> None:
        self.counts = counts
        self.k = config.trending_k
        self.half_life_s = config.trending_half_life_s
        self.horizon_s = config.trending_half_life_s * config.trending_horizon_half_lives

    def fetch(self, query: FeedQuery) -> Candidates:
        items, counts = self.counts.trending(query.now, self.half_life_s, self.horizon_s, self.k)
        return source_candidates(self.name, items, counts)


class CoEngagementSource:
    """Item-to-item: neighbours of the user's most recent items (as of `query.now`), scored by
    the sum of their similarities to those seeds. The seeds themselves are not candidates."""

    name = COENGAGEMENT

    def __init__(self, neighbours: ItemNeighbours, engagements: RecentEngagements, config: SourcesConfig) -> None:
        self.neighbours = neighbours
        self.engagements = engagements
        self.k = config.coengagement_k
        self.n_seeds = config.coengagement_recent_items

    def fetch(self, query: FeedQuery) -> Candidates:
        seeds, _ = self.engagements.recent_items(query.user_id, query.now, None, self.n_seeds)
        pairs = [self.neighbours.of(int(s)) for s in seeds]
        if not pairs:
            return source_candidates(self.name, np.zeros(0, np.int64), np.zeros(0, np.float32))
        item_ids = np.concatenate([p[0] for p in pairs])
        sims = np.concatenate([p[1] for p in pairs]).astype(np.float64)
        not_seed = ~np.isin(item_ids, seeds)
        items, totals = _aggregate(item_ids[not_seed], sims[not_seed], self.k)
        return source_candidates(self.name, items, totals)


# ----------------------------------------------------------------------------- merge


def source_score_column(source: str) -> str:
    return f"src_{source}"


def source_features(candidates: Candidates, source_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Per row, about the row's item across every source that produced it: `n_sources`,
    `src_<name>` (that source's score for the item, 0 where it did not produce it) and
    `close_friend` (OR over the item's rows)."""
    items, inverse = np.unique(candidates.item_ids, return_inverse=True)
    n = len(items)
    produced = np.zeros(n, np.int64)
    columns: dict[str, np.ndarray] = {}
    for source in source_names:
        rows = candidates.sources == source
        best = np.full(n, -np.inf)
        np.maximum.at(best, inverse[rows], candidates.source_scores[rows].astype(np.float64))
        found = np.isfinite(best)
        produced += found
        columns[source_score_column(source)] = np.where(found, best, 0.0).astype(np.float32)[inverse]
    close = np.zeros(n, bool)
    if "close_friend" in candidates.features:
        np.logical_or.at(close, inverse, candidates.features["close_friend"].astype(bool))
    return {"n_sources": produced[inverse], "close_friend": close[inverse], **columns}


def _rank_within_source(candidates: Candidates, code: np.ndarray) -> np.ndarray:
    """0 for each source's best-scored row, 1 for its next, ... (`code`: the row's source)."""
    order = np.lexsort((candidates.item_ids, -candidates.source_scores, code))  # by source, then best first
    starts = np.concatenate([[0], np.cumsum(np.bincount(code))[:-1]])
    rank = np.empty(len(candidates), np.int64)
    rank[order] = np.arange(len(order)) - starts[code[order]]
    return rank


def select_with_quotas(
    candidates: Candidates, quotas: Mapping[str, int], total: int, backfill: bool = True
) -> np.ndarray:
    """Positions of the merged candidate set: one row per item, at most `quotas[s]` rows from
    source s (unlisted sources: only `total` bounds them), at most `total` rows overall.

    Rows compete by how deep they sit in their source's quota (rank / quota), so every source
    fills its quota from its top; an item produced by several sources keeps its best row and
    counts against that source. With `backfill`, slots left under `total` after quotas go to
    the best remaining rows. Order of the result: that competition order.
    """
    if len(candidates) == 0 or total < 1:
        return np.zeros(0, np.int64)
    # Per-source codes (sources in order of first appearance), so the loop below touches Python
    # ints only (indexing NumPy scalars and object arrays per row cost several ms per request).
    code, uniques = pd.factorize(candidates.sources)
    code = code.astype(np.int64)
    names = list(uniques)
    rank = _rank_within_source(candidates, code)
    source_quota = [int(quotas.get(name, total)) for name in names]
    quota = np.asarray(source_quota, np.float64)[code]
    depth = np.where(quota > 0, rank / np.maximum(quota, 1), np.inf)
    tie_of = np.array([SOURCE_NAMES.index(n) if n in SOURCE_NAMES else len(SOURCE_NAMES) for n in names], np.int64)
    order = np.lexsort((candidates.item_ids, tie_of[code], rank, depth))  # last key sorts first
    if all(n_rows <= q for n_rows, q in zip(np.bincount(code, minlength=len(names)).tolist(), source_quota)):
        # No source has more rows than its quota (the default: each fetches at most its quota),
        # so no quota can bind: the loop below would keep each item's first row, in order.
        _, first = np.unique(candidates.item_ids[order], return_index=True)
        return order[np.sort(first)[:total]]
    items_in_order = candidates.item_ids[order].tolist()
    codes_in_order = code[order].tolist()
    order_list = order.tolist()
    chosen: list[int] = []
    taken: set[int] = set()
    used = [0] * len(names)
    for pos, item, c in zip(order_list, items_in_order, codes_in_order):
        if item in taken or used[c] >= source_quota[c]:
            continue
        chosen.append(pos)
        taken.add(item)
        used[c] += 1
        if len(chosen) == total:
            break
    if backfill and len(chosen) < total:
        for pos, item in zip(order_list, items_in_order):
            if item not in taken:
                chosen.append(pos)
                taken.add(item)
                if len(chosen) == total:
                    break
    return np.asarray(chosen, np.int64)


class SourceFeatureHydrator:
    """Hydrator: `n_sources`, `src_<name>` per source and `close_friend`, per item across sources."""

    name = "source_features"

    def __init__(self, source_names: Sequence[str] = SOURCE_NAMES) -> None:
        self.source_names = tuple(source_names)

    def hydrate(self, query: FeedQuery, candidates: Candidates) -> dict[str, np.ndarray]:
        return source_features(candidates, self.source_names)


class SourceMerger:
    """Selector: de-duplicates items across sources under per-source quotas and a total size.

    Example:
        SourceMerger(SourcesConfig(quotas={"ann": 400, "trending": 100}, total_candidates=500))
    """

    name = "source_merge"

    def __init__(self, config: SourcesConfig) -> None:
        self.quotas = dict(config.quotas)
        self.total = config.total_candidates
        self.backfill = config.backfill

    def select(self, query: FeedQuery, candidates: Candidates) -> np.ndarray:
        return select_with_quotas(candidates, self.quotas, self.total, self.backfill)


class SeenItemFilter:
    """Filter: drops items in `query.seen_item_ids`."""

    name = "seen_items"

    def keep(self, query: FeedQuery, candidates: Candidates) -> tuple[np.ndarray, str]:
        if not query.seen_item_ids:
            return np.ones(len(candidates), bool), "seen"
        seen = np.fromiter(query.seen_item_ids, np.int64, len(query.seen_item_ids))
        return ~np.isin(candidates.item_ids, seen), "seen"


def merge_candidates(
    parts: Sequence[Candidates], config: SourcesConfig, source_names: Sequence[str] = SOURCE_NAMES,
    seen_item_ids: frozenset[int] = frozenset(),
) -> Candidates:
    """The three merge stages in one call: cross-source features, seen filter, quota selection."""
    candidates = Candidates.concat(list(parts))
    candidates = candidates.with_features(source_features(candidates, source_names))
    if seen_item_ids:
        keep, _ = SeenItemFilter().keep(FeedQuery(user_id=0, seen_item_ids=seen_item_ids), candidates)
        candidates = candidates.take(keep)
    return candidates.take(select_with_quotas(candidates, config.quotas, config.total_candidates, config.backfill))
