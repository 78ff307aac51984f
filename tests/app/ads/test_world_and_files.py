"""The seeded generator, and the world's file round trip with row-and-field errors."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from app.ads.config import AdWorldGeneratorConfig
from app.ads.files import FORMATS, AdDataError, load_ad_world, save_ad_world
from app.ads.world import SENSITIVE_CATEGORIES, generate_ad_world, with_ad_choices
from tests.app.ads.conftest import DAY_START


def test_generator_is_seeded_and_plausible(world, vocab, generator_config, users) -> None:
    assert generate_ad_world(vocab, generator_config, DAY_START) == world
    other = generate_ad_world(vocab, AdWorldGeneratorConfig(seed=6, n_advertisers=30), DAY_START)
    assert other != world
    categories = {c.category for c in world.campaigns}
    assert categories & set(SENSITIVE_CATEGORIES)
    assert all(c.targeting.min_age >= 21 for c in world.campaigns if c.category == "alcohol")
    assert any(a.creator_id is not None for a in world.ads)
    assert any(c.targeting.genre_interests for c in world.campaigns)
    assert any(u.opted_out_all for u in users) and any(u.opted_out_categories for u in users)
    cfg = generator_config
    assert all(cfg.daily_budget_min <= c.daily_budget <= cfg.daily_budget_max for c in world.campaigns)


def test_events_follow_the_documented_ground_truth(events, truth, world, users) -> None:
    assert set(events.columns) == {"ts", "user_id", "ad_id", "campaign_id", "slot", "click", "conversion"}
    assert not (events["conversion"] & ~events["click"]).any()
    by_slot = events.groupby("slot")["click"].mean()
    assert by_slot.is_monotonic_decreasing  # true slot factors 1.0 > 0.75 > ...
    sample = events.iloc[:50_000]
    user_by_id = {u.user_id: u for u in users}
    ad_by_id = {a.ad_id: a for a in world.ads}
    p_click, _ = truth.probabilities(
        [user_by_id[i] for i in sample["user_id"]], [ad_by_id[i] for i in sample["ad_id"]],
        sample["slot"].to_numpy(), world.campaigns_by_id,
    )
    assert sample["click"].mean() == pytest.approx(p_click.mean(), rel=0.05)


@pytest.mark.parametrize("fmt", FORMATS)
def test_round_trip(fmt, world, users, tmp_path) -> None:
    save_ad_world(world, users, tmp_path, fmt)
    loaded_world, loaded_users = load_ad_world(tmp_path, fmt)
    assert loaded_world == world and loaded_users == users


def _corrupt_csv(tmp_path, world, users, table, row, column, value):
    save_ad_world(world, users, tmp_path, "csv")
    frame = pd.read_csv(tmp_path / f"{table}.csv", dtype=str, keep_default_na=False)
    frame.loc[row - 1, column] = value
    frame.to_csv(tmp_path / f"{table}.csv", index=False)


@pytest.mark.parametrize(
    ("table", "column", "value", "message"),
    [
        ("campaigns", "daily_budget", "-5", "greater than 0"),
        ("campaigns", "bid", "lots", "valid number"),
        ("campaigns", "advertiser_id", "99999", "unknown advertiser_id"),
        ("ads", "campaign_id", "99999", "unknown campaign_id"),
        ("ad_users", "age", "old", "valid integer"),
        ("ad_users", "opted_out_all", "maybe", "valid boolean"),
    ],
)
def test_malformed_csv_names_file_row_and_field(tmp_path, world, users, table, column, value, message) -> None:
    _corrupt_csv(tmp_path, world, users, table, 3, column, value)
    with pytest.raises(AdDataError, match=message) as caught:
        load_ad_world(tmp_path, "csv")
    assert (caught.value.path.name, caught.value.row, caught.value.field) == (f"{table}.csv", 3, column)
    assert f"{table}.csv: row 3, field '{column}'" in str(caught.value)


def test_cross_field_and_duplicate_errors(tmp_path, world, users) -> None:
    _corrupt_csv(tmp_path, world, users, "campaigns", 2, "end_ts", "0")
    with pytest.raises(AdDataError, match=r"campaigns.csv: row 2: .*end_ts must be after start_ts"):
        load_ad_world(tmp_path, "csv")
    _corrupt_csv(tmp_path, world, users, "ads", 4, "ad_id", "0")
    with pytest.raises(AdDataError, match=r"ads.csv: row 4, field 'ad_id': duplicate id 0"):
        load_ad_world(tmp_path, "csv")


def test_malformed_json_and_parquet(tmp_path, world, users) -> None:
    save_ad_world(world, users, tmp_path, "json")
    rows = json.loads((tmp_path / "advertisers.json").read_text())
    rows[1]["colour"] = "red"
    (tmp_path / "advertisers.json").write_text(json.dumps(rows))
    with pytest.raises(AdDataError, match=r"advertisers.json: row 2, field 'colour': Extra inputs"):
        load_ad_world(tmp_path, "json")
    (tmp_path / "advertisers.json").write_text("{not json")
    with pytest.raises(AdDataError, match=r"advertisers.json: unreadable json"):
        load_ad_world(tmp_path, "json")
    save_ad_world(world, users, tmp_path, "parquet")
    frame = pd.read_parquet(tmp_path / "ads.parquet").drop(columns=["title"])
    frame.to_parquet(tmp_path / "ads.parquet")
    with pytest.raises(AdDataError, match=r"ads.parquet: row 1, field 'title': Field required"):
        load_ad_world(tmp_path, "parquet")
    save_ad_world(world, users, tmp_path, "parquet")
    (tmp_path / "ad_users.parquet").unlink()
    with pytest.raises(AdDataError, match="ad_users.parquet: file not found"):
        load_ad_world(tmp_path, "parquet")


def test_opt_outs_are_seeded_and_only_add(users, generator_config) -> None:
    assert with_ad_choices(users, generator_config) == with_ad_choices(users, generator_config)
    again = with_ad_choices(users, generator_config)
    assert all(a.opted_out_categories >= u.opted_out_categories for a, u in zip(again, users))
    assert all(a.opted_out_all or not u.opted_out_all for a, u in zip(again, users))
