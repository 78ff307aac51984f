from pathlib import Path
from typing import Literal

from pydantic import Field

from app._config_base import Section


class SyntheticWorldConfig(Section):
    """Size of the synthetic world (`dataset: synthetic`); the other generative constants are
    SyntheticWorldSpec's defaults (app/data/synthetic.py)."""

    n_users: int = Field(10_000, ge=1, le=100_000_000, description="users of the synthetic world")
    n_items: int = Field(50_000, ge=1, le=100_000_000, description="items (the catalogue) of the synthetic world")
    n_creators: int = Field(2_000, ge=1, le=10_000_000, description="creators the items are spread over (Zipf)")
    interactions_per_user: float = Field(30.0, gt=0, le=10_000, description="mean logged interactions per user")
    cache: bool = Field(
        True, description="keep a generated world as parquet under cache_dir (keyed by its spec and seed) and reuse it"
    )


class UserColumns(Section):
    """Which columns of the `users` table fill the models' four user slots. The two towers and the
    ranker read all four; ad targeting reads age, gender and occupation; the content-rating filter
    age; the generated friend graph (when there is no social_edges table) age, occupation and region.
    A slot without a column is "unknown" for every user."""

    age: str | None = Field("age", description="numeric age in years")
    gender: str | None = Field("gender", description="a categorical attribute (first slot)")
    occupation: str | None = Field("occupation", description="a categorical attribute (second slot)")
    region: str | None = Field("zip_code", description="a location code; its prefix is the region")


class TablesConfig(Section):
    """A dataset in the table contract (docs/data.md), read from a local path or a URI."""

    uri: str = Field("data/tables", min_length=1,
                     description="directory of the tables: a local path or file://, s3://, gs://, hdfs:// URI")
    name: str = Field("tables", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$",
                      description="the dataset's name (artifacts, reports)")
    user_columns: UserColumns = Field(default_factory=UserColumns)
    watch_seconds_cap: float = Field(
        600.0, gt=0, le=86_400, description="E(watch) learns min(watch seconds / this, 1) from event logs")
    label_window_s: float = Field(
        3600.0, gt=0, le=30 * 86_400,
        description="an engagement counts for an impression without a request id when it follows it within this")


class DataConfig(Section):
    """Where datasets come from and are cached."""

    dataset: Literal["movielens-100k", "synthetic", "tables"] = Field(
        "movielens-100k", description="movielens-100k, synthetic, or tables (your own data, data.tables)")
    cache_dir: Path = Field(Path("data_cache"), description="downloaded and parsed datasets")
    grouplens_dir: Path | None = Field(
        None, description="a directory holding the standard GroupLens ml-100k files (u.data, u.user, u.item)"
    )
    seed: int = Field(7, description="seed of every generated layer (friend graph, synthetic world)")
    friends_per_user: float = Field(12.0, ge=0, le=500, description="mean out-degree of the friend graph")
    friend_zip_prefix_len: int = Field(2, ge=1, le=5, description="zip digits shared by 'nearby' users")
    unrated_min_age: int = Field(13, ge=0, le=21, description="minimum viewer age of unrated (NR) items")
    close_friends_per_user: int = Field(3, ge=0, le=50, description="heaviest edges marked close per user")
    friend_age_scale: float = Field(8.0, gt=0, le=50, description="age difference (years) where affinity halves")
    tables: TablesConfig = Field(default_factory=TablesConfig, description="your own data (dataset: tables)")
    synthetic: SyntheticWorldConfig = Field(
        default_factory=SyntheticWorldConfig, description="the synthetic world's size (dataset: synthetic)"
    )
