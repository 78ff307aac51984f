"""Users and ads as integer columns: the shared vocabulary of the ground-truth simulator and the
learned ad models, so both see the same attributes the same way."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from app.ads.types import Ad, AdUser, Campaign

# MovieLens-1M's age groups, used here as the age feature of MovieLens-100k's exact ages.
AGE_BUCKET_EDGES: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
N_AGE_BUCKETS = len(AGE_BUCKET_EDGES) + 1


@dataclass(frozen=True)
class AdVocabulary:
    """Closed sets of attribute values; an unseen value maps to the extra 'other' index."""

    genders: tuple[str, ...]
    occupations: tuple[str, ...]
    genres: tuple[str, ...]
    categories: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.genres) > 62:
            raise ValueError("at most 62 genres fit the 64-bit genre masks")

    @staticmethod
    def _index(values: tuple[str, ...], value: str) -> int:
        try:
            return values.index(value)
        except ValueError:
            return len(values)

    def genre_mask(self, genres) -> int:
        mask = 0
        for g in genres:
            if g in self.genres:
                mask |= 1 << self.genres.index(g)
        return mask


@dataclass(frozen=True)
class UserColumns:
    age_bucket: np.ndarray  # int64
    gender: np.ndarray
    occupation: np.ndarray
    genre_mask: np.ndarray  # uint64 bitmask of top genres


@dataclass(frozen=True)
class AdColumns:
    category: np.ndarray  # int64
    topic_mask: np.ndarray  # uint64 bitmask of the ad's topics


def encode_users(users: Sequence[AdUser], vocab: AdVocabulary) -> UserColumns:
    return UserColumns(
        age_bucket=np.searchsorted(AGE_BUCKET_EDGES, [u.age for u in users], side="right").astype(np.int64),
        gender=np.array([vocab._index(vocab.genders, u.gender) for u in users], dtype=np.int64),
        occupation=np.array([vocab._index(vocab.occupations, u.occupation) for u in users], dtype=np.int64),
        genre_mask=np.array([vocab.genre_mask(u.top_genres) for u in users], dtype=np.uint64),
    )


def encode_ads(ads: Sequence[Ad], campaigns: dict[int, Campaign], vocab: AdVocabulary) -> AdColumns:
    return AdColumns(
        category=np.array([vocab._index(vocab.categories, campaigns[a.campaign_id].category) for a in ads], dtype=np.int64),
        topic_mask=np.array([vocab.genre_mask(a.topics) for a in ads], dtype=np.uint64),
    )


def genre_overlap(user_masks: np.ndarray, ad_masks: np.ndarray) -> np.ndarray:
    """How many of the user's top genres the ad is about (elementwise)."""
    return np.bitwise_count(np.bitwise_and(user_masks, ad_masks)).astype(np.float64)
