"""Position auctions over the ad slots of one page: generalized second price and VCG.

Model (Edelman-Ostrovsky-Schwarz / Varian, quality-weighted): ad i bids b_i per billable
action (a conversion) and has quality q_i = pCTR_i * pCVR_i, its expected actions per
impression in the top slot; in slot s it gets alpha_s * q_i actions per impression, with
alpha_1 >= alpha_2 >= ... Ads rank by eCPM e_i = b_i * q_i (ties: lower ad_id first). Only ads
with e_i >= reserve r take part, and the reserve acts as a bidder with eCPM r below every slot.
Write e'_k = max(e_k, r), with e_k = 0 past the last bidder.

Billing is per impression: the textbook per-action price p_s, times the expected actions of
the impression, alpha_s * q_s. For the winner of slot s (1-based, S slots, alpha_{S+1} = 0):

    GSP:  p_s = e'_{s+1} / q_s                        per impression: alpha_s * e'_{s+1}
    VCG:  per impression = sum_{t=s..S} (alpha_t - alpha_{t+1}) * e'_{t+1}   (the externality)
          p_s = that / (alpha_s * q_s)

Hence p_s <= b_s (a winner's e_s >= e'_{s+1}), VCG <= GSP slot by slot (e' is non-increasing),
and every price is at least the reserve's (alpha_s * r per impression).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class AuctionBid:
    ad_id: int
    bid: float  # per billable action, pacing already applied
    quality: float  # expected actions per top-slot impression: pCTR * pCVR

    @property
    def ecpm(self) -> float:
        return self.bid * self.quality


@dataclass(frozen=True)
class SlotAward:
    ad_id: int
    slot: int  # 0-based
    slot_factor: float
    ecpm: float
    price_per_action: float
    price_per_impression: float


class PositionAuction(Protocol):
    name: str

    def run(self, bids: Sequence[AuctionBid], n_slots: int) -> list[SlotAward]:
        """Winners in slot order, at most `n_slots` (and at most the configured slot factors)."""
        ...


def _ranked(bids: Sequence[AuctionBid], reserve_ecpm: float) -> list[AuctionBid]:
    eligible = [b for b in bids if b.bid > 0 and b.quality > 0 and b.ecpm >= reserve_ecpm]
    return sorted(eligible, key=lambda b: (-b.ecpm, b.ad_id))


def _next_ecpm(ranked: list[AuctionBid], k: int, reserve_ecpm: float) -> float:
    """e'_k: the k-th ranked eCPM (0-based), floored by the reserve, the reserve past the end."""
    return max(ranked[k].ecpm, reserve_ecpm) if k < len(ranked) else reserve_ecpm


def _award(b: AuctionBid, slot: int, alpha: float, per_impression: float) -> SlotAward:
    # min() only guards floating-point rounding; the formulas already give price <= bid.
    per_action = min(b.bid, per_impression / (alpha * b.quality))
    return SlotAward(b.ad_id, slot, alpha, b.ecpm, per_action, min(per_impression, alpha * b.ecpm))


@dataclass(frozen=True)
class GSPAuction:
    """Generalized second price: each winner pays the least bid that keeps its slot.

    Example:
        GSPAuction((1.0, 0.5), reserve_ecpm=0.0).run([AuctionBid(1, 2.0, 0.1), AuctionBid(2, 1.0, 0.1)], 2)
        # ad 1 in slot 0 pays 1.0 per action = 0.1 per impression; ad 2 pays the reserve
    """

    slot_factors: tuple[float, ...]
    reserve_ecpm: float
    name: str = "gsp"

    def run(self, bids: Sequence[AuctionBid], n_slots: int) -> list[SlotAward]:
        ranked = _ranked(bids, self.reserve_ecpm)
        n = min(n_slots, len(self.slot_factors), len(ranked))
        return [
            _award(ranked[s], s, self.slot_factors[s], self.slot_factors[s] * _next_ecpm(ranked, s + 1, self.reserve_ecpm))
            for s in range(n)
        ]


@dataclass(frozen=True)
class VCGAuction:
    """Vickrey-Clarke-Groves: each winner pays the value its presence costs the ads below it."""

    slot_factors: tuple[float, ...]
    reserve_ecpm: float
    name: str = "vcg"

    def run(self, bids: Sequence[AuctionBid], n_slots: int) -> list[SlotAward]:
        ranked = _ranked(bids, self.reserve_ecpm)
        n_in_play = min(n_slots, len(self.slot_factors))
        alphas = [*self.slot_factors[:n_in_play], 0.0]
        awards = []
        for s in range(min(n_in_play, len(ranked))):
            externality = sum(
                (alphas[t] - alphas[t + 1]) * _next_ecpm(ranked, t + 1, self.reserve_ecpm) for t in range(s, n_in_play)
            )
            awards.append(_award(ranked[s], s, alphas[s], externality))
        return awards
