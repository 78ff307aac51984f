"""One simulated day of a campaign with and without budget pacing.

Traffic follows the realistic daily curve of `app.ads.world.daily_traffic_weights` (night
trough, morning and lunch bumps, evening peak). At every ad opportunity the campaign meets the
best competing eCPM (log-normal) in a one-slot GSP auction; a win reserves and commits the price
through the same `InMemoryBudgetStore` the server uses, so a budget can never be overspent. The
pacer's traffic forecast is learned from a previous week's request timestamps. The budget is
set to a third of what the campaign would spend unthrottled over the whole day, so the unpaced
campaign runs dry early.

    python benchmarks/pacing_sim.py --out runs/pacing.png

Prints an hourly table and the headline figures, writes the plot, and exits non-zero if the
paced campaign spends under 95% of its budget, overspends, or the unpaced one lasts past 15h.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from app.ads.auction import AuctionBid, GSPAuction
from app.ads.config import AdsConfig
from app.ads.pacing import BudgetPacer, TrafficForecast
from app.ads.world import daily_traffic_weights, sample_daily_timestamps
from app.state.budgets import BudgetStatus, InMemoryBudgetStore

DAY_START = 1_700_006_400.0  # a UTC midnight
CAMPAIGN = 1
BID, QUALITY = 5.0, 0.003  # per conversion; pCTR * pCVR  -> eCPM 0.015 at m = 1
COMPETITOR_MEDIAN_ECPM, COMPETITOR_SIGMA = 0.012, 0.6


def simulate(ts: np.ndarray, competitors: np.ndarray, budget: float, pacer: BudgetPacer | None, cfg: AdsConfig):
    """Cumulative spend after each opportunity, and the multiplier used there."""
    store = InMemoryBudgetStore(cfg.reservation_ttl_s)
    auction = GSPAuction((1.0,), cfg.reserve_ecpm)
    spend = np.zeros(len(ts))
    multipliers = np.ones(len(ts))
    spent = 0.0
    for i, (now, rival) in enumerate(zip(ts, competitors)):
        m = 1.0
        if pacer is not None:
            m = pacer.multiplier(budget, budget - spent, now)
        multipliers[i] = m
        if budget - spent > 0:
            awards = auction.run([AuctionBid(CAMPAIGN, BID * m, QUALITY), AuctionBid(0, rival / QUALITY, QUALITY)], 1)
            if awards and awards[0].ad_id == CAMPAIGN:
                rid = f"op-{i}"
                if store.reserve(rid, CAMPAIGN, awards[0].price_per_impression, budget, now) == BudgetStatus.RESERVED:
                    store.commit(rid, now)
                    spent = store.snapshot({CAMPAIGN: budget}, now)[CAMPAIGN].spent
        spend[i] = spent
    return spend, multipliers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/pacing.png"))
    parser.add_argument("--opportunities", type=int, default=60_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    cfg = AdsConfig()
    rng = np.random.default_rng(args.seed)

    history = sample_daily_timestamps(rng, 7 * args.opportunities, DAY_START - 7 * 86_400, n_days=7)
    forecast = TrafficForecast.fit(history, cfg.forecast_buckets, cfg.forecast_smoothing_buckets)
    pacer = BudgetPacer.from_config(forecast, cfg)

    ts = sample_daily_timestamps(rng, args.opportunities, DAY_START)
    competitors = COMPETITOR_MEDIAN_ECPM * np.exp(COMPETITOR_SIGMA * rng.standard_normal(len(ts)))
    unlimited, _ = simulate(ts, competitors, budget=1e12, pacer=None, cfg=cfg)
    budget = round(unlimited[-1] / 3, 2)
    unpaced, _ = simulate(ts, competitors, budget, None, cfg)
    paced, multipliers = simulate(ts, competitors, budget, pacer, cfg)

    hours = (ts - DAY_START) / 3600
    traffic_share = np.arange(1, len(ts) + 1) / len(ts)
    print(f"budget {budget:.2f} (a third of the unthrottled day's {unlimited[-1]:.2f}); {len(ts)} opportunities")
    print("cumulative share by hour; traffic% is also the on-pace spend%")
    print(f"{'hour':>4} {'traffic%':>9} {'unpaced%':>9} {'paced%':>7} {'m':>6}")
    for h in range(1, 25):
        i = max(0, np.searchsorted(hours, h) - 1)
        print(
            f"{h:>4} {100 * traffic_share[i]:>9.1f} "
            f"{100 * unpaced[i] / budget:>9.1f} {100 * paced[i] / budget:>7.1f} {multipliers[i]:>6.2f}"
        )
    exhausted_at = hours[np.argmax(unpaced >= budget - 0.02)] if unpaced[-1] >= budget - 0.02 else float("nan")
    paced_share = paced[-1] / budget
    max_pace_gap = np.max(np.abs(paced / budget - traffic_share))
    print(f"unpaced: spent {100 * unpaced[-1] / budget:.1f}% of budget, ran dry at {exhausted_at:.1f}h")
    print(f"paced:   spent {100 * paced_share:.2f}% of budget, overspend {max(0.0, paced[-1] - budget):.4f}, "
          f"max gap to the traffic curve {100 * max_pace_gap:.1f} points")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot(hours, unpaced, label="unpaced")
    top.plot(hours, paced, label="paced")
    top.plot(hours, traffic_share * budget, "--", color="grey", label="on pace (traffic share x budget)")
    top.axhline(budget, color="black", lw=0.8, label="daily budget")
    top.set_ylabel("cumulative spend")
    top.legend(loc="lower right")
    top.set_title("Budget pacing over one simulated day")
    curve = daily_traffic_weights(np.linspace(0, 24, 200))
    bottom.plot(hours, multipliers, color="tab:orange", label="pacing multiplier m(t)")
    bottom.plot(np.linspace(0, 24, 200), curve / curve.max() * multipliers.max(), color="grey", lw=0.8, label="traffic (scaled)")
    bottom.set_xlabel("hour of day (UTC)")
    bottom.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"plot: {args.out}  ({time.perf_counter() - started:.1f} s)")

    ok = 0.95 <= paced_share <= 1.0 + 1e-9 and unpaced[-1] <= budget + 1e-9 and exhausted_at <= 15
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
