"""`data.dataset: synthetic` sized by `data.synthetic`, and its parquet cache."""
import pytest

from config import ConfigError, load_config
from app.data import DataConfig, load_dataset
from app.data.synthetic import cache_key, generate_world, spec_from_config

SMALL = {"n_users": 120, "n_items": 900, "n_creators": 40, "interactions_per_user": 8.0}


def _config(tmp_path, **changes):
    return DataConfig(dataset="synthetic", cache_dir=tmp_path, synthetic={**SMALL, **changes.pop("synthetic", {})},
                      **changes)


def test_config_sizes_the_world_and_the_cache_returns_the_same_tables(tmp_path):
    config = _config(tmp_path)
    world = load_dataset(config)
    assert (world.n_users, world.n_items, len(world.creators)) == (120, 900, 40)
    cached = list(tmp_path.glob("synthetic-120u-900i-*"))
    assert len(cached) == 1 and (cached[0] / "meta.json").exists()
    again = load_dataset(config)
    assert again.meta["cache"] == str(cached[0])
    for table in ("users", "items", "creators", "interactions", "social_edges"):
        assert getattr(again, table).equals(getattr(world, table)), table
    assert again.topics == world.topics and isinstance(again.items["topics"].iloc[0], tuple)
    assert generate_world(spec_from_config(config), config).interactions.equals(world.interactions)


def test_cache_key_follows_every_generator_input(tmp_path):
    base = _config(tmp_path)
    key = cache_key(spec_from_config(base), base)
    for other in (_config(tmp_path, seed=8), _config(tmp_path, friends_per_user=5.0),
                  _config(tmp_path, synthetic={"n_creators": 41})):
        assert cache_key(spec_from_config(other), other) != key
    moved = _config(tmp_path / "elsewhere")
    assert cache_key(spec_from_config(moved), moved) == key  # where the cache lives is not an input


def test_cache_off_writes_nothing(tmp_path):
    load_dataset(_config(tmp_path, synthetic={"cache": False}))
    assert not list(tmp_path.iterdir())


def test_synthetic_section_is_validated():
    with pytest.raises(ConfigError, match="n_items"):
        load_config(overrides={"data": {"synthetic": {"n_items": 0}}})
    with pytest.raises(ConfigError, match="n_itemz"):
        load_config(overrides={"data": {"synthetic": {"n_itemz": 10}}})
