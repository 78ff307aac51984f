"""Injected time. Day boundaries and TTLs come from a clock the caller passes, never `time.time`
inside logic, so tests advance time instead of sleeping."""
from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]  # unix seconds

SECONDS_PER_DAY = 86_400


def system_clock() -> float:
    return time.time()


def day_index(now: float) -> int:
    """The UTC day `now` falls in; cap and budget counters reset when it changes."""
    return int(now // SECONDS_PER_DAY)


def seconds_to_day_end(now: float) -> float:
    return (day_index(now) + 1) * SECONDS_PER_DAY - now


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start: float) -> None:
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ReplayClock:
    """World time for a dataset that ended in the past (MovieLens ends in 1998): it starts at
    `anchor` (the dataset's last event) and advances with the wall clock. Trending, social
    windows, sessions and pacing then see a live world instead of one frozen decades ago."""

    def __init__(self, anchor: float, wall: Clock = system_clock) -> None:
        self.anchor = float(anchor)
        self.wall = wall
        self.started = wall()

    def __call__(self) -> float:
        return self.anchor + (self.wall() - self.started)
