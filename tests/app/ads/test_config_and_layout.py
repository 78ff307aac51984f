"""AdsConfig validation, and the app/ads + app/state layering rules."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from pydantic import ValidationError

from app.ads.config import AdsConfig
from app.ads.server import make_auction

ROOT = Path(__file__).resolve().parents[3]


def test_defaults_validate() -> None:
    config = AdsConfig()
    assert config.slot_ctr_factors[0] == 1.0 and config.auction == "gsp"
    assert make_auction(config).name == "gsp"
    assert make_auction(AdsConfig(auction="vcg")).name == "vcg"


@pytest.mark.parametrize(
    "override",
    [
        {"slot_ctr_factors": (0.5, 0.9)},  # increasing
        {"slot_ctr_factors": (1.5,)},
        {"auction": "first_price"},
        {"ad_user_daily_cap": -1},
        {"session_category_caps": {"political": -1}},
        {"pacing_min_multiplier": 0},
        {"unknown_knob": 1},
        {"generator": {"n_advertisers": 0}},
    ],
)
def test_bad_values_are_rejected(override) -> None:
    with pytest.raises(ValidationError):
        AdsConfig(**override)


def test_ads_and_state_never_import_ray_or_read_the_environment() -> None:
    for package in ("app/ads", "app/state"):
        for path in (ROOT / package).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    assert not any(a.name.split(".")[0] == "ray" for a in node.names), path
                if isinstance(node, ast.ImportFrom):
                    assert (node.module or "").split(".")[0] != "ray", path
                if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv"):
                    assert path.name == "local_redis.py", path


def test_hidden_creators_extend_an_ad_users_blocked_creators():
    from app.ads.types import AdUser

    user = AdUser(1, 30, "F", "writer", blocked_creator_ids=frozenset({5}))
    assert user.hiding_creators(frozenset()) is user
    assert user.hiding_creators(frozenset({7})).blocked_creator_ids == {5, 7}
    assert user.blocked_creator_ids == {5}  # frozen: the stored profile is unchanged
