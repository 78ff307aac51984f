"""MovieLens-100k as the real default world.

Source, in order of preference:
  1. the standard GroupLens files (u.data, u.user, u.item) in `DataConfig.grouplens_dir`;
  2. the copy inside the `recbole==1.2.1` wheel on PyPI (fetched once with
     `pip download --no-deps`), which also links movies to Freebase.

From the Freebase links (RecBole's ml-100k.link + ml-100k.kg):
  * creators: `film.film.directed_by`. A film with several directors gets the first by MID
    (deterministic). Fallback for a movie without a link or director: its own pseudo-creator
    "unknown:<item_id>", so unrelated movies are never lumped under one creator.
  * content ratings: `film.film.rating`. The KG gives rating entities as MIDs without names;
    the four most frequent are mapped to MPAA labels by their share of the catalogue
    (R ≈ 50%, PG-13 ≈ 20%, PG ≈ 20%, then G), an inference recorded in CONTENT_RATINGS.
    A film with several ratings takes the most restrictive. Anything else is "NR" (unrated)
    with `unrated_min_age` as its minimum viewer age: the policy filter fails safe.
Genres become topics. Parsed tables are cached as parquet under `DataConfig.cache_dir`.
"""
from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from app.data.config import DataConfig
from app.data.errors import DataFormatError
from app.data.parsing import read_delimited
from app.data.social import generate_friend_graph
from app.data.tables import Dataset

log = logging.getLogger(__name__)

RECBOLE_WHEEL = "recbole==1.2.1"
RECBOLE_PREFIX = "recbole/dataset_example/ml-100k/"

GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)

# Freebase content-rating entity → (label, minimum viewer age). Inferred, see module docstring.
CONTENT_RATINGS: dict[str, tuple[str, int]] = {
    "m.0kprd8": ("R", 17),
    "m.0kprd3": ("PG-13", 13),
    "m.0kprc8": ("PG", 0),
    "m.0kprdf": ("G", 0),
}
UNRATED = "NR"


def load_movielens(config: DataConfig) -> Dataset:
    """The MovieLens-100k world (users, items, creators, ratings, a seeded friend graph)."""
    cache = Path(config.cache_dir) / "movielens-100k"
    tables = _read_cache(cache)
    if tables is None:
        if config.grouplens_dir is not None:
            tables = _parse_grouplens(Path(config.grouplens_dir))
        else:
            tables = _parse_recbole(_recbole_files(Path(config.cache_dir)), config)
        _write_cache(cache, tables)
    users, items, creators, interactions = tables
    edges = generate_friend_graph(users, config)
    return Dataset(
        name="movielens-100k",
        users=users,
        items=items,
        creators=creators,
        interactions=interactions,
        social_edges=edges,
        topics=GENRES,
        meta={"source": "grouplens" if config.grouplens_dir else RECBOLE_WHEEL},
    )


def _recbole_files(cache_dir: Path) -> Path:
    """Extract RecBole's ml-100k files into the cache (downloading the wheel once)."""
    target = cache_dir / "recbole-ml-100k"
    names = ("ml-100k.inter", "ml-100k.user", "ml-100k.item", "ml-100k.link", "ml-100k.kg")
    if all((target / n).exists() for n in names):
        return target
    target.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    if not wheels:
        log.info("fetching %s from PyPI (once) into %s", RECBOLE_WHEEL, cache_dir)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_WHEEL, "-d", str(cache_dir)],
            check=True,
        )
        wheels = sorted(cache_dir.glob("recbole-1.2.1-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in names:
            (target / name).write_bytes(wheel.read(RECBOLE_PREFIX + name))
    return target


def _parse_recbole(root: Path, config: DataConfig) -> tuple[pd.DataFrame, ...]:
    users = read_delimited(
        root / "ml-100k.user",
        {"user_id": "int", "age": "int", "gender": "str", "occupation": "str", "zip_code": "str"},
        sep="\t", header=True, source_names=["user_id", "age", "gender", "occupation", "zip_code"],
    )
    raw_items = read_delimited(
        root / "ml-100k.item",
        {"item_id": "int", "title": "str", "release_year": "str", "genres": "str"},
        sep="\t", header=True, source_names=["item_id", "title", "release_year", "genres"],
    )
    interactions = read_delimited(
        root / "ml-100k.inter",
        {"user_id": "int", "item_id": "int", "rating": "float", "timestamp": "float"},
        sep="\t", header=True, source_names=["user_id", "item_id", "rating", "timestamp"],
    )
    links = read_delimited(
        root / "ml-100k.link", {"item_id": "int", "entity": "str"}, sep="\t", header=True,
        source_names=["item_id", "entity"],
    )
    kg = read_delimited(
        root / "ml-100k.kg", {"head": "str", "relation": "str", "tail": "str"}, sep="\t", header=True,
        source_names=["head", "relation", "tail"],
    )
    topics = [_split_genres(g, root / "ml-100k.item", i + 2) for i, g in enumerate(raw_items["genres"])]
    items = raw_items.drop(columns=["genres"]).assign(topics=topics)
    items["release_year"] = pd.to_numeric(items["release_year"], errors="coerce").fillna(0).astype(np.int64)
    items, creators = _attach_freebase(items, links, kg, config)
    return _finish(users, items, creators, interactions, root)


def _split_genres(text: str, path: Path, row: int) -> tuple[str, ...]:
    genres = tuple(g for g in text.split(" ") if g)
    unknown = [g for g in genres if g not in GENRES]
    if unknown:
        raise DataFormatError(path, row, "class", f"unknown genre {unknown[0]!r}")
    return genres or ("unknown",)


def _attach_freebase(
    items: pd.DataFrame, links: pd.DataFrame, kg: pd.DataFrame, config: DataConfig
) -> tuple[pd.DataFrame, pd.DataFrame]:
    entity_of = dict(zip(links["item_id"], links["entity"]))
    directed = kg[kg["relation"] == "film.film.directed_by"].sort_values(["head", "tail"])
    director_of = directed.groupby("head")["tail"].first().to_dict()
    rated = kg[kg["relation"] == "film.film.rating"]
    min_age_of: dict[str, tuple[str, int]] = {}
    for head, tail in zip(rated["head"], rated["tail"]):
        label = CONTENT_RATINGS.get(tail)
        if label is None:
            continue
        if head not in min_age_of or label[1] > min_age_of[head][1]:
            min_age_of[head] = label
    entities, ratings, min_ages = [], [], []
    for item_id in items["item_id"]:
        film = entity_of.get(int(item_id))
        entities.append(director_of.get(film, f"unknown:{item_id}"))
        label, age = min_age_of.get(film, (UNRATED, config.unrated_min_age))
        ratings.append(label)
        min_ages.append(age)
    creator_entities = sorted(set(entities))
    creator_id = {e: i + 1 for i, e in enumerate(creator_entities)}
    items = items.assign(
        creator_id=[creator_id[e] for e in entities], content_rating=ratings, min_age=np.array(min_ages, np.int64)
    )
    counts = pd.Series(entities).value_counts()
    creators = pd.DataFrame(
        {
            "creator_id": [creator_id[e] for e in creator_entities],
            "entity": creator_entities,
            "n_items": [int(counts[e]) for e in creator_entities],
        }
    )
    return items, creators


def _parse_grouplens(root: Path) -> tuple[pd.DataFrame, ...]:
    """The standard GroupLens files. No Freebase links: every movie gets the fallbacks."""
    users = read_delimited(
        root / "u.user",
        {"user_id": "int", "age": "int", "gender": "str", "occupation": "str", "zip_code": "str"},
        sep="|", header=False, source_names=["user_id", "age", "gender", "occupation", "zip_code"],
    )
    interactions = read_delimited(
        root / "u.data", {"user_id": "int", "item_id": "int", "rating": "float", "timestamp": "float"},
        sep="\t", header=False, source_names=["user_id", "item_id", "rating", "timestamp"],
    )
    names = ["item_id", "title", "release_date", "video", "url", *[f"g{i}" for i in range(len(GENRES))]]
    raw = read_delimited(root / "u.item", {n: "str" for n in names}, sep="|", header=False, source_names=names)
    flags = raw[[f"g{i}" for i in range(len(GENRES))]].to_numpy() == "1"
    items = pd.DataFrame(
        {
            "item_id": pd.to_numeric(raw["item_id"]).astype(np.int64),
            "title": raw["title"],
            "release_year": pd.to_numeric(raw["release_date"].str[-4:], errors="coerce").fillna(0).astype(np.int64),
            "topics": [tuple(g for g, f in zip(GENRES, row) if f) or ("unknown",) for row in flags],
        }
    )
    items = items.assign(
        creator_id=np.arange(1, len(items) + 1), content_rating=UNRATED, min_age=np.int64(DataConfig().unrated_min_age)
    )
    creators = pd.DataFrame(
        {"creator_id": items["creator_id"], "entity": [f"unknown:{i}" for i in items["item_id"]], "n_items": 1}
    )
    return _finish(users, items, creators, interactions, root)


def _finish(users, items, creators, interactions, root: Path) -> tuple[pd.DataFrame, ...]:
    bad_rating = ~interactions["rating"].between(1, 5)
    if bad_rating.any():
        row = int(np.flatnonzero(bad_rating.to_numpy())[0])
        raise DataFormatError(root, row + 2, "rating", f"rating {interactions['rating'].iloc[row]} outside 1..5")
    interactions = interactions.assign(
        rating=interactions["rating"].astype(np.float32),
        timestamp=interactions["timestamp"].astype(np.int64),
        position=np.int64(-1),
    )
    return users, items, creators, interactions


def _read_cache(cache: Path) -> tuple[pd.DataFrame, ...] | None:
    names = ("users", "items", "creators", "interactions")
    if not all((cache / f"{n}.parquet").exists() for n in names):
        return None
    tables = [pd.read_parquet(cache / f"{n}.parquet") for n in names]
    tables[1]["topics"] = [tuple(t) for t in tables[1]["topics"]]
    return tuple(tables)


def _write_cache(cache: Path, tables: tuple[pd.DataFrame, ...]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name, table in zip(("users", "items", "creators", "interactions"), tables):
        out = table.assign(topics=[list(t) for t in table["topics"]]) if name == "items" else table
        out.to_parquet(cache / f"{name}.parquet", index=False)
