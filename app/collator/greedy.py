"""Greedy slot allocation: repeatedly insert the (ad, gap) pair with the largest exact marginal
CollatorScore among those that keep the page valid, until no insertion gains anything.

An ad is inserted into a gap g = "before organic item g" (g = 0..O). Inserting moves every organic
item from g on and every ad after g one regular slot down; the marginal score of all insertions is
computed at once with NumPy (suffix sums over the shifted items), so one round costs O(A·O).
The feasibility tests mirror `rules.page_violations` for the page after the insertion.
"""
from __future__ import annotations

import numpy as np

from app.collator.allocation import AllocationProblem, Placement

_GAIN_EPS = 1e-12
_ENGAGEMENT_EPS = 1e-9


def _suffix_sum(x: np.ndarray) -> np.ndarray:
    """out[g] = Σ_{i>=g} x[i], with out[len(x)] = 0."""
    out = np.zeros(len(x) + 1)
    out[:-1] = np.cumsum(x[::-1])[::-1]
    return out


def _suffix_any(x: np.ndarray) -> np.ndarray:
    out = np.zeros(len(x) + 1, dtype=bool)
    out[:-1] = np.logical_or.accumulate(x[::-1])[::-1]
    return out


def solve_greedy(problem: AllocationProblem) -> Placement:
    """The greedy placement of `problem` (see the module docstring)."""
    p = problem
    O, A, M = p.n_organic, p.n_ads, p.n_slots
    rules = p.rules
    cap = p.max_ads()
    if cap == 0:
        return ()
    size = M + O + 2
    w_ext = np.zeros(size)  # examination of a regular slot; 0 past the page
    w_ext[:M] = p.slot_weight
    allowed_ext = np.zeros(size, dtype=bool)
    allowed_ext[:M] = p.ad_allowed
    floor = rules.min_page_engagement * p.engagement_reference if rules.min_page_engagement > 0 else None

    gaps = np.arange(O + 1)
    organic_idx = np.arange(O)
    placed_gaps: list[int] = []  # sorted
    placed_ads: list[int] = []  # ad index of each placed gap, same order
    used = np.zeros(A, dtype=bool)
    engagement = float(np.dot(p.engage, w_ext[:O])) if O else 0.0
    crowding = p.weights.gamma * p.model.page_crowding_penalty

    while len(placed_gaps) < cap:
        n = len(placed_gaps)
        g_arr = np.asarray(placed_gaps, dtype=np.int64)
        ad_arr = np.asarray(placed_ads, dtype=np.int64)

        # Organic items: current slot and the change when moved one slot down.
        slot_org = organic_idx + np.searchsorted(g_arr, organic_idx, side="right")
        dw_org = w_ext[slot_org + 1] - w_ext[slot_org]
        value_shift = _suffix_sum(p.weights.alpha * p.value * dw_org)
        engage_shift = _suffix_sum(p.engage * dw_org)
        cf_pushed_off = _suffix_any(p.close_friend & (slot_org == M - 1))

        # Placed ads: ad k sits in slot g_k + k; those with g_k > g move down.
        slot_ad = g_arr + np.arange(n)
        dw_ad = w_ext[slot_ad + 1] - w_ext[slot_ad]
        first_after = np.searchsorted(g_arr, gaps, side="right")
        ad_value_shift = _suffix_sum(p.ad_net[ad_arr] * dw_ad)[first_after]
        ad_engage_shift = _suffix_sum(p.ad_pctr[ad_arr] * dw_ad)[first_after]
        shift_ok = (slot_ad + 1 < M) & allowed_ext[slot_ad + 1]
        ads_shift_bad = _suffix_any(~shift_ok)[first_after]

        new_slot = gaps + np.searchsorted(g_arr, gaps, side="left")
        ok = (new_slot < M) & allowed_ext[new_slot] & ~cf_pushed_off & ~ads_shift_bad
        if n:
            ok &= np.min(np.abs(gaps[:, None] - g_arr[None, :]), axis=1) >= rules.min_gap
        w_new = w_ext[new_slot]

        base = value_shift + ad_value_shift - crowding * n
        gain = base[None, :] + p.ad_net[:, None] * w_new[None, :]
        feasible = ok[None, :] & ~used[:, None]
        # Brand safety: organic g−1 precedes the ad; organic g follows it if it stays on the page.
        feasible[:, 1:] &= ~p.unsafe
        follows = new_slot[:O] + 1 < M
        feasible[:, :O] &= ~(p.unsafe & follows[None, :])
        if floor is not None:
            new_engagement = engagement + engage_shift + ad_engage_shift
            feasible &= new_engagement[None, :] + p.ad_pctr[:, None] * w_new[None, :] >= floor - _ENGAGEMENT_EPS

        gain = np.where(feasible, gain, -np.inf)
        a, g = np.unravel_index(int(np.argmax(gain)), gain.shape)
        if not gain[a, g] > _GAIN_EPS:
            break
        engagement += float(engage_shift[g] + ad_engage_shift[g] + p.ad_pctr[a] * w_new[g])
        k = int(np.searchsorted(g_arr, g))
        placed_gaps.insert(k, int(g))
        placed_ads.insert(k, int(a))
        used[a] = True

    return tuple((a, g + k) for k, (g, a) in enumerate(zip(placed_gaps, placed_ads)))
