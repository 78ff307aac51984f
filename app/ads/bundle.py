"""Everything the ads side loads at start: world, ad models, traffic forecast, ad users.

Built by training/ads.py from a Dataset (MovieLens users become `AdUser`s with their real age,
gender, occupation and their strongest genres), saved inside an artifact version, loaded by
the serving layer.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.ads.files import load_ad_world, save_ad_world
from app.ads.pacing import TrafficForecast
from app.ads.ranking import AdRanker
from app.ads.types import AdUser
from app.ads.world import AdWorld, UserVocabulary
from app.data.tables import Dataset


def vocabulary_of(dataset: Dataset) -> UserVocabulary:
    users = dataset.users
    return UserVocabulary(
        genders=tuple(sorted(users["gender"].unique())),
        occupations=tuple(sorted(users["occupation"].unique())),
        genres=tuple(dataset.topics),
        min_age=int(users["age"].min()),
        max_age=int(users["age"].max()),
    )


def ad_users_from_dataset(dataset: Dataset, history: pd.DataFrame, top_genres: int) -> list[AdUser]:
    """One AdUser per dataset user; `top_genres` strongest genres by count in their history."""
    topic_matrix = dataset.item_topic_matrix
    genre_counts = pd.DataFrame(topic_matrix[history["item_id"].to_numpy()], columns=list(dataset.topics))
    genre_counts["user_id"] = history["user_id"].to_numpy()
    per_user = genre_counts.groupby("user_id").sum()
    topics = np.array(dataset.topics, dtype=object)
    strongest: dict[int, frozenset[str]] = {}
    for user_id, row in zip(per_user.index.to_numpy(), per_user.to_numpy()):
        order = np.argsort(-row, kind="stable")[:top_genres]
        strongest[int(user_id)] = frozenset(str(t) for t in topics[order][row[order] > 0])
    return [
        AdUser(int(u), int(a), str(g), str(o), strongest.get(int(u), frozenset()))
        for u, a, g, o in dataset.users[["user_id", "age", "gender", "occupation"]].itertuples(index=False)
    ]


@dataclass(frozen=True)
class AdsBundle:
    world: AdWorld
    users: Mapping[int, AdUser]
    ranker: AdRanker
    forecast: TrafficForecast
    vocabulary: UserVocabulary

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        save_ad_world(self.world, self.users.values(), directory / "world")
        self.ranker.save(directory / "ranker.npz")
        np.save(directory / "traffic_shares.npy", self.forecast.shares)
        (directory / "vocabulary.json").write_text(json.dumps(self.vocabulary.__dict__))

    @classmethod
    def load(cls, directory: Path) -> "AdsBundle":
        vocabulary = UserVocabulary(**{
            k: tuple(v) if isinstance(v, list) else v
            for k, v in json.loads((directory / "vocabulary.json").read_text()).items()
        })
        world, users = load_ad_world(directory / "world")
        ranker = AdRanker.load(directory / "ranker.npz", vocabulary.ad_vocabulary())
        forecast = TrafficForecast(np.load(directory / "traffic_shares.npy"))
        return cls(world, {u.user_id: u for u in users}, ranker, forecast, vocabulary)
