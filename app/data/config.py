from pathlib import Path

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


class DataConfig(Section):
    """Where datasets come from and are cached."""

    dataset: str = Field("movielens-100k", description="movielens-100k or synthetic")
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
    synthetic: SyntheticWorldConfig = Field(
        default_factory=SyntheticWorldConfig, description="the synthetic world's size (dataset: synthetic)"
    )
