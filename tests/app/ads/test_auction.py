"""Auction prices against hand-computed examples, and the textbook properties."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.ads.auction import AuctionBid, GSPAuction, VCGAuction

ALPHAS = (1.0, 0.6, 0.3)


def test_gsp_worked_example() -> None:
    # eCPMs: ad 1: 4*0.05 = 0.20, ad 2: 2*0.08 = 0.16, ad 3: 5*0.02 = 0.10, ad 4: 1*0.05 = 0.05
    bids = [AuctionBid(3, 5.0, 0.02), AuctionBid(1, 4.0, 0.05), AuctionBid(4, 1.0, 0.05), AuctionBid(2, 2.0, 0.08)]
    awards = GSPAuction(ALPHAS, reserve_ecpm=0.01).run(bids, n_slots=3)
    assert [a.ad_id for a in awards] == [1, 2, 3]
    # slot 1 pays e_2 / q_1 = 0.16 / 0.05 = 3.2 per action, alpha_1 * e_2 = 0.16 per impression
    assert awards[0].price_per_action == pytest.approx(3.2)
    assert awards[0].price_per_impression == pytest.approx(0.16)
    # slot 2: 0.10 / 0.08 = 1.25 per action; 0.6 * 0.10 = 0.06 per impression
    assert awards[1].price_per_action == pytest.approx(1.25)
    assert awards[1].price_per_impression == pytest.approx(0.06)
    # slot 3: the first loser's 0.05 / 0.02 = 2.5 per action; 0.3 * 0.05 = 0.015 per impression
    assert awards[2].price_per_action == pytest.approx(2.5)
    assert awards[2].price_per_impression == pytest.approx(0.015)


def test_vcg_worked_example() -> None:
    bids = [AuctionBid(3, 5.0, 0.02), AuctionBid(1, 4.0, 0.05), AuctionBid(4, 1.0, 0.05), AuctionBid(2, 2.0, 0.08)]
    awards = VCGAuction(ALPHAS, reserve_ecpm=0.01).run(bids, n_slots=3)
    assert [a.ad_id for a in awards] == [1, 2, 3]
    # slot 3: (0.3 - 0) * 0.05 = 0.015
    # slot 2: (0.6 - 0.3) * 0.10 + 0.015 = 0.045
    # slot 1: (1.0 - 0.6) * 0.16 + 0.045 = 0.109
    assert [a.price_per_impression for a in awards] == pytest.approx([0.109, 0.045, 0.015])
    assert awards[0].price_per_action == pytest.approx(0.109 / (1.0 * 0.05))
    assert awards[1].price_per_action == pytest.approx(0.045 / (0.6 * 0.08))


def test_reserve_prices_the_last_winner_and_excludes_low_bids() -> None:
    bids = [AuctionBid(1, 4.0, 0.05), AuctionBid(2, 1.0, 0.05)]  # eCPM 0.20 and 0.05
    for auction in (GSPAuction(ALPHAS, 0.08), VCGAuction(ALPHAS, 0.08)):
        awards = auction.run(bids, n_slots=3)
        assert [a.ad_id for a in awards] == [1]  # ad 2 is below the reserve
        assert awards[0].price_per_impression == pytest.approx(0.08)  # alpha_1 * r
        assert awards[0].price_per_action == pytest.approx(0.08 / 0.05)


def test_ties_break_by_lower_ad_id_and_tied_winner_pays_its_bid() -> None:
    bids = [AuctionBid(9, 2.0, 0.1), AuctionBid(4, 1.0, 0.2)]  # both eCPM 0.2
    awards = GSPAuction(ALPHAS, 0.0).run(bids, n_slots=1)
    assert [a.ad_id for a in awards] == [4]
    assert awards[0].price_per_action == pytest.approx(1.0)


def test_slots_limited_by_request_and_configured_factors() -> None:
    bids = [AuctionBid(i, 1.0 + i, 0.1) for i in range(6)]
    assert len(GSPAuction(ALPHAS, 0.0).run(bids, n_slots=2)) == 2
    assert len(VCGAuction(ALPHAS, 0.0).run(bids, n_slots=10)) == len(ALPHAS)
    assert GSPAuction(ALPHAS, 0.0).run([], n_slots=3) == []


bid_lists = st.lists(
    st.builds(
        AuctionBid,
        ad_id=st.integers(0, 50),
        bid=st.floats(0.01, 100.0),
        quality=st.floats(1e-5, 0.5),
    ),
    max_size=12,
    unique_by=lambda b: b.ad_id,
)
alpha_lists = st.lists(st.floats(0.05, 1.0), min_size=1, max_size=6).map(lambda xs: tuple(sorted(xs, reverse=True)))


@settings(max_examples=300, deadline=None)
@given(bids=bid_lists, alphas=alpha_lists, reserve=st.one_of(st.just(0.0), st.floats(1e-6, 2.0)), n_slots=st.integers(1, 8))
def test_auction_properties(bids, alphas, reserve, n_slots) -> None:
    gsp = GSPAuction(alphas, reserve).run(bids, n_slots)
    vcg = VCGAuction(alphas, reserve).run(bids, n_slots)
    by_id = {b.ad_id: b for b in bids}
    # same allocation: best eCPM first, ties by ad id, only bids at or above the reserve
    assert [a.ad_id for a in gsp] == [a.ad_id for a in vcg]
    ranked = sorted((b for b in bids if b.ecpm >= reserve), key=lambda b: (-b.ecpm, b.ad_id))
    assert [a.ad_id for a in gsp] == [b.ad_id for b in ranked[: min(n_slots, len(alphas))]]
    for g, v in zip(gsp, vcg):
        b = by_id[g.ad_id]
        assert g.slot == v.slot and g.slot_factor == alphas[g.slot]
        # nobody pays more than they bid, per action or in expectation per impression
        assert g.price_per_action <= b.bid and v.price_per_action <= b.bid
        assert g.price_per_impression <= g.slot_factor * b.ecpm * (1 + 1e-12)
        # VCG never charges more than GSP for the same slot
        assert v.price_per_impression <= g.price_per_impression * (1 + 1e-9) + 1e-15
        # the reserve is respected
        assert g.price_per_impression >= g.slot_factor * reserve * (1 - 1e-9)
        assert v.price_per_impression >= v.slot_factor * reserve * (1 - 1e-9)
        assert b.ecpm >= reserve
