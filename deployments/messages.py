"""What travels between deployments: plain dataclasses (pickled by Ray), no Ray imports.

Every message carries the W3C trace context of the ingress span (`trace`), so each stage's
spans join the request's trace (observability.tracing.continue_trace), and the request's
`deadline` (unix seconds, None for none): a stage that starts past it raises `DeadlineExceeded`
instead of working for a client the ingress has already answered.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from app.ads.types import AdResult
from app.collator.types import Notification, OrganicEntry
from app.pipeline import Candidates, FeedQuery

if TYPE_CHECKING:
    from observability.live_monitor import CandidateSample


class DeadlineExceeded(Exception):
    """A stage was reached after its request's deadline; the work was not done."""

    def __init__(self, stage: str, late_s: float = 0.0) -> None:
        super().__init__(f"{stage}: deadline passed {late_s * 1000:.0f} ms ago")
        self.stage, self.late_s = stage, late_s

    def __reduce__(self):  # Ray re-raises replica exceptions in the caller: keep them picklable
        return DeadlineExceeded, (self.stage, self.late_s)


def check_deadline(deadline: float | None, stage: str, now: float | None = None) -> None:
    """Raise `DeadlineExceeded` when `deadline` (unix seconds) has passed."""
    if deadline is None:
        return
    late = (time.time() if now is None else now) - deadline
    if late > 0:
        raise DeadlineExceeded(stage, late)


def batch_deadline(deadlines: list[float | None]) -> float | None:
    """A batched call is given up only when every request in it is past due (None: no deadline)."""
    return None if any(d is None for d in deadlines) else max(deadlines)  # type: ignore[type-var]


@dataclass(frozen=True)
class OrganicRequest:
    user_id: int
    now: float
    limit: int
    request_id: str
    served_item_ids: frozenset[int] = frozenset()
    hidden_item_ids: frozenset[int] = frozenset()
    hidden_creator_ids: frozenset[int] = frozenset()
    explain: bool = False
    trace: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None


@dataclass
class OrganicWork:
    """Retrieval → Ranking → Reranking: the query and the candidates so far."""

    request: OrganicRequest
    query: FeedQuery
    candidates: Candidates
    timings_ms: dict[str, float] = field(default_factory=dict)
    removed: dict[str, int] = field(default_factory=dict)  # explain mode: "<stage>: <reason>" -> n
    versions: dict[str, str] = field(default_factory=dict)
    # Set by Ranking on requests the live monitor logs (observability.live_monitor.is_sampled).
    monitor_sample: CandidateSample | None = None


@dataclass
class OrganicPage:
    """Reranking's answer: what the collator needs, plus explain details."""

    entries: list[OrganicEntry]
    notifications: list[Notification]
    cold_start: bool
    timings_ms: dict[str, float]
    versions: dict[str, str]
    provenance: dict[int, dict[str, object]] | None = None
    removed: dict[str, int] | None = None
    # Logged requests only: Ranking's feature sample, and head -> prediction per entry (entries' order).
    monitor_sample: CandidateSample | None = None
    head_scores: dict[str, list[float]] | None = None


@dataclass(frozen=True)
class AdsRequest:
    user_id: int
    request_id: str
    n_slots: int
    now: float
    session_id: str
    hidden_creator_ids: frozenset[int] = frozenset()
    trace: dict[str, str] = field(default_factory=dict)
    deadline: float | None = None


@dataclass
class AdsAnswer:
    result: AdResult | None
    seconds: float
    version: str
