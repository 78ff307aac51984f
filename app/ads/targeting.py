"""Which campaigns may reach a user: an inverted index over the targeting attributes.

Each attribute value (an age, a gender, an occupation, a genre) owns a precomputed boolean mask
over campaigns: the campaigns that accept it, wildcards included. A request ANDs a handful of
masks (one per attribute; genres OR the user's few top genres) instead of testing every
campaign's targeting in Python, then checks the flight window on the survivors only.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from app.ads.types import AdUser, Campaign, Targeting


def matches(targeting: Targeting, user: AdUser) -> bool:
    """The targeting rule itself, one campaign at a time: the reference the index must agree with."""
    return (
        targeting.min_age <= user.age <= targeting.max_age
        and (not targeting.genders or user.gender in targeting.genders)
        and (not targeting.occupations or user.occupation in targeting.occupations)
        and (not targeting.genre_interests or bool(targeting.genre_interests & user.top_genres))
    )


class TargetingIndex:
    """Campaigns whose targeting accepts a user and whose flight covers `now`.

    Example:
        index = TargetingIndex(world.campaigns)
        campaign_ids = index.match(user, now)
    """

    name = "targeting"

    def __init__(self, campaigns: Sequence[Campaign], max_age: int = 130) -> None:
        self._campaign_ids = np.array([c.campaign_id for c in campaigns], dtype=np.int64)
        self._start = np.array([c.start_ts for c in campaigns], dtype=np.float64)
        self._end = np.array([c.end_ts for c in campaigns], dtype=np.float64)
        n = len(campaigns)
        lo = np.array([max(0, c.targeting.min_age) for c in campaigns], dtype=np.int64)
        hi = np.array([min(max_age, c.targeting.max_age) for c in campaigns], dtype=np.int64)
        ages = np.arange(max_age + 1)[:, None]
        self._by_age = (lo[None, :] <= ages) & (ages <= hi[None, :])  # [age, campaign]
        self._max_age = max_age
        self._by_gender, self._any_gender = self._value_masks(n, [c.targeting.genders for c in campaigns])
        self._by_occupation, self._any_occupation = self._value_masks(n, [c.targeting.occupations for c in campaigns])
        self._by_genre, self._any_genre = self._value_masks(n, [c.targeting.genre_interests for c in campaigns])

    @staticmethod
    def _value_masks(n: int, accepted: list[frozenset[str]]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per value, the campaigns that list it; plus the campaigns that accept any value."""
        by_value: dict[str, np.ndarray] = {}
        wildcard = np.zeros(n, dtype=bool)
        for i, values in enumerate(accepted):
            if not values:
                wildcard[i] = True
            for v in values:
                by_value.setdefault(v, np.zeros(n, dtype=bool))[i] = True
        return by_value, wildcard

    def match(self, user: AdUser, now: float) -> np.ndarray:
        """Ids of the matching campaigns, ascending by position in the catalogue."""
        if not 0 <= user.age <= self._max_age:
            return self._campaign_ids[:0]
        mask = self._by_age[user.age].copy()
        mask &= self._any_gender | self._by_gender.get(user.gender, self._any_gender)
        mask &= self._any_occupation | self._by_occupation.get(user.occupation, self._any_occupation)
        genres = self._any_genre.copy()
        for g in user.top_genres:
            if g in self._by_genre:
                genres |= self._by_genre[g]
        mask &= genres
        hits = np.flatnonzero(mask)
        live = (self._start[hits] <= now) & (now < self._end[hits])
        return self._campaign_ids[hits[live]]
