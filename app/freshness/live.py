"""Live engagement: what a serving replica learns from the event stream between two artifacts.

A Retrieval replica follows `rf:events` and feeds every engagement (click, like, share, a watch
that was not a bounce, conversion) into `LiveEngagement.observe`. Within milliseconds:

- the user's *dynamic embedding* is re-encoded by the trained user tower from their fresh items
  (newest first) followed by their stored history, with every weight untouched;
- the query gets a *static+dynamic ensemble* of the two embeddings, `w·dynamic + (1−w)·static`,
  where `w` depends on context: a user in an active session (an event within
  `active_session_s`) leans on what they are doing now, an idle one on their long-term taste;
- the engagement joins the replica's `EngagementLog`, so the seen-item filter, co-engagement
  seeds, friends' activity and trending all see it;
- `fresh_items(user)` travels with the query to ranking, whose history features include them,
  and `session_items(user, now)` (the active session's part) feeds the session-interest term.

Everything here runs on the replica's event loop, so no locks: `observe` and the request path
never interleave. When a new artifact is swapped in, `attach(models)` re-applies the retained
engagements to it (the artifact's snapshot predates them).

Example:
    live = LiveEngagement(models.two_tower, config.retrieval.dynamic)
    live.attach(models)
    live.observe(stream_events)               # from EventStream.read / XREAD
    query = models.query(42, now, 20, user_embedding=live.embedding(42, now),
                         fresh_item_ids=live.fresh_items(42))
"""
from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from app.retrieval.config import DynamicEmbeddingConfig
from app.retrieval.features import OOV
from app.retrieval.two_tower_serving import TwoTowerArtifacts
from app.state.events import StreamEvent


@dataclass(frozen=True)
class Engagement:
    user_id: int
    item_id: int
    ts: float


def engagements(events: Iterable[StreamEvent], config: DynamicEmbeddingConfig) -> list[Engagement]:
    """The stream events that say a user engaged with an item, in stream order."""
    kinds = frozenset(config.engagement_types)
    out = []
    for e in events:
        if e.item_id is None or e.type not in kinds:
            continue
        if e.type == "watch" and (e.watch_seconds is None or e.watch_seconds < config.min_watch_seconds):
            continue
        out.append(Engagement(int(e.user_id), int(e.item_id), float(e.ts)))
    return out


class LiveEngagement:
    """Fresh items, dynamic embeddings and session context per user, for one replica."""

    def __init__(self, two_tower: TwoTowerArtifacts, config: DynamicEmbeddingConfig) -> None:
        self.config = config
        self._two_tower = two_tower
        self._fresh: dict[int, deque[tuple[int, float]]] = {}  # (item, ts), newest first
        self._last_event: dict[int, float] = {}
        self._dynamic: dict[int, np.ndarray] = {}
        self._retained: deque[Engagement] = deque(maxlen=config.retained_engagements)
        self._attached: object | None = None
        self.applied = 0  # engagements observed since start (a gauge for tests and /readyz)
        self.last_applied_ts = 0.0

    # -- the serving artifact ----------------------------------------------------------------
    def attach(self, models) -> None:
        """Point at a (newly loaded) OrganicModels: its engagement log gets the retained
        engagements, and dynamic embeddings are re-encoded with its two-tower."""
        if models is self._attached:
            return
        self._attached = models
        self._two_tower = models.two_tower
        if self._retained:
            _add_to_log(models.engagements, list(self._retained))
        self._dynamic.clear()
        self._encode(list(self._fresh))

    # -- the stream --------------------------------------------------------------------------
    def observe(self, events: Sequence[StreamEvent]) -> int:
        """Apply the engagements among `events`; returns how many there were."""
        found = engagements(events, self.config)
        if not found:
            return 0
        touched: dict[int, None] = {}
        for e in found:
            fresh = self._fresh.get(e.user_id)
            if fresh is None:
                fresh = self._fresh[e.user_id] = deque(maxlen=self.config.max_fresh_items)
            fresh.appendleft((e.item_id, e.ts))  # newest first
            self._last_event[e.user_id] = max(self._last_event.get(e.user_id, 0.0), e.ts)
            touched[e.user_id] = None
        self._retained.extend(found)
        if self._attached is not None:
            _add_to_log(self._attached.engagements, found)
        self._encode(list(touched))
        self.applied += len(found)
        self.last_applied_ts = max(self.last_applied_ts, max(e.ts for e in found))
        return len(found)

    # -- what a request reads ------------------------------------------------------------------
    def fresh_items(self, user_id: int) -> tuple[int, ...]:
        fresh = self._fresh.get(int(user_id))
        return tuple(item for item, _ in fresh) if fresh else ()

    def session_items(self, user_id: int, now: float) -> tuple[int, ...]:
        """Fresh items engaged within `active_session_s` of `now` (the short-term interest)."""
        fresh = self._fresh.get(int(user_id))
        if not fresh:
            return ()
        horizon = now - self.config.active_session_s
        return tuple(item for item, ts in fresh if ts >= horizon)

    def dynamic_weight(self, user_id: int, now: float) -> float:
        last = self._last_event.get(int(user_id))
        if last is None:
            return 0.0
        active = now - last <= self.config.active_session_s
        return self.config.dynamic_weight_active if active else self.config.dynamic_weight_idle

    def embedding(self, user_id: int, now: float) -> np.ndarray | None:
        """The ensemble embedding for a user with fresh engagement; None: use the stored one."""
        dynamic = self._dynamic.get(int(user_id))
        if dynamic is None:
            return None
        static = self._two_tower.user_embedding(int(user_id))
        if static is None:  # unknown at training time: the fresh items are all there is
            return dynamic
        w = self.dynamic_weight(user_id, now)
        blend = w * dynamic + (1.0 - w) * static
        norm = float(np.linalg.norm(blend))
        return (blend / norm).astype(np.float32) if norm > 0 else static

    # -- internals -----------------------------------------------------------------------------
    def _encode(self, users: list[int]) -> None:
        """Re-encode `users` in one user-tower pass: fresh items, then the stored history."""
        if not users:
            return
        art, length = self._two_tower, self._two_tower.config.history_length
        rows = art.features.user_rows(np.asarray(users, dtype=np.int64))
        history = np.zeros((len(users), max(length, 1)), dtype=np.int64)
        fresh = [[i for i, _ in self._fresh[user]] for user in users]
        # One id lookup for every user's fresh items (a lookup per user cost more than the tower).
        bounds = np.cumsum([0, *(len(f) for f in fresh)])
        all_fresh_rows = art.features.item_rows(np.fromiter((i for f in fresh for i in f), np.int64, bounds[-1]))
        for k in range(len(users)):
            fresh_rows = all_fresh_rows[bounds[k]:bounds[k + 1]]
            fresh_rows = fresh_rows[fresh_rows != OOV]
            stored = art.user_histories[rows[k]] if rows[k] != OOV else np.zeros(0, np.int64)
            combined = np.concatenate([fresh_rows, stored[stored != OOV]])[:length]
            history[k, : len(combined)] = combined
        for user, vector in zip(users, art.user_vectors(rows, history[:, :length])):
            self._dynamic[user] = vector


def _add_to_log(log, found: Sequence[Engagement]) -> None:
    log.add_arrays(  # O(batch) on an EngagementLog, trending counts included
        np.fromiter((e.user_id for e in found), np.int64, len(found)),
        np.fromiter((e.item_id for e in found), np.int64, len(found)),
        np.fromiter((e.ts for e in found), np.float64, len(found)),
    )
