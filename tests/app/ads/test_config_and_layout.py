"""AdsConfig validation, and the app/ads + app/state layering rules."""
from __future__ import annotations

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


def test_hidden_creators_extend_an_ad_users_blocked_creators():
    from app.ads.types import AdUser

    user = AdUser(1, 30, "F", "writer", blocked_creator_ids=frozenset({5}))
    assert user.hiding_creators(frozenset()) is user
    assert user.hiding_creators(frozenset({7})).blocked_creator_ids == {5, 7}
    assert user.blocked_creator_ids == {5}  # frozen: the stored profile is unchanged
