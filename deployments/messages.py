"""What travels between deployments besides the app's own types: the deadline error and the
Auction's answer. Plain dataclasses (pickled by Ray), no Ray imports.

The requests themselves are the app's: `app.organic.OrganicRequest` → `OrganicWork` →
`OrganicPage` along the organic chain, `app.ads.server.AdsRequest` to the Auction. Each carries
the W3C trace context of the ingress span (`trace`), so every stage's spans join the request's
trace, and the request's `deadline` (unix seconds, None for none): a stage that starts past it
raises `DeadlineExceeded` instead of working for a client the ingress has already answered.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from app.ads.types import AdResult


class DeadlineExceeded(Exception):
    """A stage was reached after its request's deadline; the work was not done."""

    def __init__(self, stage: str, late_s: float = 0.0) -> None:
        super().__init__(f"{stage}: deadline passed {late_s * 1000:.0f} ms ago")
        self.stage, self.late_s = stage, late_s

    def __reduce__(self):  # Ray re-raises replica exceptions in the caller: keep them picklable
        return DeadlineExceeded, (self.stage, self.late_s)


class TakedownsUnknown(Exception):
    """A replica that never read the takedowns (Redis unreachable since it started) serves
    nothing: it cannot know what must not be shown."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"{stage}: takedowns not loaded yet (Redis unreachable since this replica started)")
        self.stage = stage

    def __reduce__(self):
        return TakedownsUnknown, (self.stage,)


class ItemStreamBehind(Exception):
    """Readiness only: a replica that has not read the item stream to its end yet (Redis
    unreachable since it started) serves the artifact's items but not every published one."""

    def __init__(self, stage: str) -> None:
        super().__init__(f"{stage}: item stream not caught up yet")
        self.stage = stage

    def __reduce__(self):
        return ItemStreamBehind, (self.stage,)


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


@dataclass
class AdsAnswer:
    result: AdResult | None
    seconds: float
    version: str
