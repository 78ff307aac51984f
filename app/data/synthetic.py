"""A synthetic world with the same tables as MovieLens, at any size (benchmarks, load tests).

Generative model (seeded, every constant a field of SyntheticWorldSpec):
  * topics t have unit vectors v_t in R^latent_dim; creators pick a main topic (Zipf sizes);
  * an item inherits its creator's topic: latent = v_topic + creator noise + item noise, and
    1–3 topics (the main one first); item popularity is log-normal (a heavy head, a long tail);
  * users have ages, genders, occupations and zip regions like MovieLens; their latent is a
    mix of two topics' vectors;
  * each user logs Poisson(interactions_per_user) interactions: `candidates_per_user` items
    are drawn by popularity, and the user keeps those with the highest affinity
    (latent · latent + Gumbel noise); ratings come from the affinity's z-score;
  * timestamps spread over `days`; positions follow a geometric logging policy (position bias
    evidence for the simulator), 1-based.

`load_synthetic(config)` is what `data.dataset: synthetic` loads: the world sized by
`data.synthetic`, kept as parquet under `data.cache_dir` (keyed by a hash of the spec and of every
DataConfig field the generator reads) so serving replicas and reruns read it instead of
generating it again (1M items: 56 s to generate).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.config import DataConfig
from app.data.social import generate_friend_graph
from app.data.snapshot import has_snapshot, read_snapshot, write_snapshot
from app.data.tables import Dataset

OCCUPATIONS = (
    "administrator", "artist", "doctor", "educator", "engineer", "entertainment", "executive",
    "healthcare", "homemaker", "lawyer", "librarian", "marketing", "none", "other", "programmer",
    "retired", "salesman", "scientist", "student", "technician", "writer",
)
CONTENT_RATINGS = (("G", 0, 0.1), ("PG", 0, 0.25), ("PG-13", 13, 0.35), ("R", 17, 0.3))


@dataclass(frozen=True)
class SyntheticWorldSpec:
    n_users: int = 10_000
    n_items: int = 50_000
    n_creators: int = 2_000
    n_topics: int = 32
    interactions_per_user: float = 30.0
    candidates_per_user: int = 128
    latent_dim: int = 16
    days: float = 30.0
    start_ts: int = 1_700_000_000
    zip_regions: int = 100
    latent_noise: float = 0.5
    popularity_sigma: float = 1.5
    position_stop_probability: float = 0.15
    choice_noise: float = 0.1


def generate_world(spec: SyntheticWorldSpec, config: DataConfig) -> Dataset:
    rng = np.random.default_rng(config.seed)
    started = time.perf_counter()
    topics = tuple(f"topic_{i:03d}" for i in range(spec.n_topics))
    topic_vectors = _unit(rng.normal(size=(spec.n_topics, spec.latent_dim)))

    creator_topic = rng.integers(0, spec.n_topics, size=spec.n_creators)
    noise = spec.latent_noise / np.sqrt(spec.latent_dim)  # per dimension, so the noise norm is latent_noise
    creator_vectors = topic_vectors[creator_topic] + noise * rng.normal(size=(spec.n_creators, spec.latent_dim))
    creator_weight = 1.0 / np.arange(1, spec.n_creators + 1) ** 0.8
    item_creator = rng.choice(spec.n_creators, size=spec.n_items, p=creator_weight / creator_weight.sum())
    item_vectors = _unit(creator_vectors[item_creator] + noise * rng.normal(size=(spec.n_items, spec.latent_dim)))
    item_popularity = rng.lognormal(0.0, spec.popularity_sigma, size=spec.n_items)

    extra_topics = rng.integers(0, spec.n_topics, size=(spec.n_items, 2))
    n_extra = rng.integers(0, 3, size=spec.n_items)
    main_topic = creator_topic[item_creator]
    topic_names = np.array(topics, dtype=object)
    item_topics = [
        tuple(dict.fromkeys(topic_names[[main_topic[i], *extra_topics[i, : n_extra[i]]]]))
        for i in range(spec.n_items)
    ]
    rating_labels, rating_ages, rating_p = zip(*CONTENT_RATINGS)
    rating_index = rng.choice(len(rating_labels), size=spec.n_items, p=np.array(rating_p) / sum(rating_p))
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, spec.n_items + 1, dtype=np.int64),
            "title": [f"item {i}" for i in range(1, spec.n_items + 1)],
            "release_year": rng.integers(1950, 2026, size=spec.n_items),
            "topics": item_topics,
            "creator_id": item_creator.astype(np.int64) + 1,
            "content_rating": np.array(rating_labels, dtype=object)[rating_index],
            "min_age": np.array(rating_ages, dtype=np.int64)[rating_index],
        }
    )
    creators = pd.DataFrame(
        {
            "creator_id": np.arange(1, spec.n_creators + 1, dtype=np.int64),
            "entity": [f"synthetic:{i}" for i in range(1, spec.n_creators + 1)],
            "n_items": np.bincount(item_creator, minlength=spec.n_creators),
        }
    )

    user_topics = rng.integers(0, spec.n_topics, size=(spec.n_users, 2))
    mix = rng.uniform(0.5, 1.0, size=(spec.n_users, 1))
    user_vectors = _unit(mix * topic_vectors[user_topics[:, 0]] + (1 - mix) * topic_vectors[user_topics[:, 1]])
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, spec.n_users + 1, dtype=np.int64),
            "age": np.clip(rng.normal(33, 12, size=spec.n_users), 13, 75).astype(np.int64),
            "gender": rng.choice(np.array(["M", "F"], dtype=object), size=spec.n_users),
            "occupation": rng.choice(np.array(OCCUPATIONS, dtype=object), size=spec.n_users),
            "zip_code": [f"{r:02d}{z:03d}" for r, z in zip(rng.integers(0, spec.zip_regions, spec.n_users), rng.integers(0, 1000, spec.n_users))],
        }
    )
    interactions = _interactions(spec, rng, user_vectors, item_vectors, item_popularity)
    edges = generate_friend_graph(users, config)
    return Dataset(
        name=f"synthetic-{spec.n_users}u-{spec.n_items}i",
        users=users,
        items=items,
        creators=creators,
        interactions=interactions,
        social_edges=edges,
        topics=topics,
        meta={"spec": spec, "generated_seconds": time.perf_counter() - started},
    )


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _interactions(
    spec: SyntheticWorldSpec,
    rng: np.random.Generator,
    user_vectors: np.ndarray,
    item_vectors: np.ndarray,
    item_popularity: np.ndarray,
) -> pd.DataFrame:
    cdf = np.cumsum(item_popularity)
    cdf /= cdf[-1]
    counts = np.minimum(rng.poisson(spec.interactions_per_user, size=spec.n_users) + 1, spec.candidates_per_user)
    chunks = []
    chunk = max(1, 2_000_000 // spec.candidates_per_user)
    for lo in range(0, spec.n_users, chunk):
        hi = min(spec.n_users, lo + chunk)
        n = hi - lo
        cand = np.searchsorted(cdf, rng.random((n, spec.candidates_per_user)))
        affinity = np.einsum("ud,ucd->uc", user_vectors[lo:hi], item_vectors[cand])
        noisy = affinity + spec.choice_noise * rng.gumbel(size=affinity.shape)
        order = np.argsort(-noisy, axis=1)
        ranks = np.empty_like(order)
        np.put_along_axis(ranks, order, np.arange(spec.candidates_per_user)[None, :].repeat(n, 0), axis=1)
        keep = ranks < counts[lo:hi, None]
        rows, cols = np.nonzero(keep)
        items = cand[rows, cols]
        aff = affinity[rows, cols]
        z = (aff - aff.mean()) / (aff.std() + 1e-9)
        ratings = np.clip(np.round(3.5 + 1.1 * z + 0.6 * rng.normal(size=len(z))), 1, 5)
        chunks.append(pd.DataFrame({"user_id": rows + lo + 1, "item_id": items + 1, "rating": ratings}))
    frame = pd.concat(chunks, ignore_index=True).drop_duplicates(["user_id", "item_id"])
    n = len(frame)
    frame["rating"] = frame["rating"].astype(np.float32)
    frame["timestamp"] = (spec.start_ts + rng.uniform(0, spec.days * 86400, size=n)).astype(np.int64)
    frame["position"] = np.minimum(rng.geometric(spec.position_stop_probability, size=n), 50).astype(np.int64)
    return frame.sort_values(["timestamp", "user_id"]).reset_index(drop=True)


_CACHE_FORMAT = 1  # bump when the cached layout or the generator's output changes


def spec_from_config(config: DataConfig) -> SyntheticWorldSpec:
    size = config.synthetic
    return SyntheticWorldSpec(
        n_users=size.n_users, n_items=size.n_items, n_creators=size.n_creators,
        interactions_per_user=size.interactions_per_user,
    )


def cache_key(spec: SyntheticWorldSpec, config: DataConfig) -> str:
    """Changes whenever the generated world would: the spec, the seed and the friend-graph knobs."""
    generator_inputs = config.model_dump(mode="json", exclude={"dataset", "cache_dir", "grouplens_dir", "synthetic"})
    payload = json.dumps({"format": _CACHE_FORMAT, "spec": dataclasses.asdict(spec), "data": generator_inputs},
                         sort_keys=True)
    return f"synthetic-{spec.n_users}u-{spec.n_items}i-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


def load_synthetic(config: DataConfig) -> Dataset:
    """The configured synthetic world, from the cache when `data.synthetic.cache` and present."""
    spec = spec_from_config(config)
    if not config.synthetic.cache:
        return generate_world(spec, config)
    directory = Path(config.cache_dir) / cache_key(spec, config)
    if has_snapshot(directory):
        return _read_world(directory, spec)
    world = generate_world(spec, config)
    _write_world(world, directory)
    return world


def _write_world(world: Dataset, directory: Path) -> None:
    write_snapshot(world, directory, {"generated_seconds": world.meta.get("generated_seconds")})


def _read_world(directory: Path, spec: SyntheticWorldSpec) -> Dataset:
    return read_snapshot(directory, extra_meta={"spec": spec, "cache": str(directory)})