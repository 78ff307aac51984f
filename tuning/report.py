"""The tuning report: PNG plots and a markdown page built from the JSON the commands write.

    OUT/tune.json    `rayfeed tune`: trials, held-out comparison, chosen weights
    OUT/audits.json  `rayfeed audit`: position, popularity, feedback-loop and creator audits
    OUT/report.md    rebuilt from whichever of the two exist, with
    OUT/frontier.png, position_bias.png, popularity.png, feedback_loop.png
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _fmt(x: Any, digits: int = 3) -> str:
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, float):
        return f"{x:.{digits}g}" if abs(x) < 1e-3 or abs(x) >= 1e4 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x)


def _table(rows: list[dict[str, Any]], columns: list[str], headers: list[str] | None = None) -> str:
    headers = headers or columns
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_frontier(tune: dict, path: Path) -> None:
    trials = tune["trials"]
    fig, ax = plt.subplots(figsize=(7, 5))
    rev = [t["revenue"] for t in trials]
    ret = [t["retained_share"] for t in trials]
    ltv = [t["long_term_value"] for t in trials]
    sc = ax.scatter(rev, ret, c=ltv, cmap="viridis", s=30, label="trials (tuning seeds)")
    fig.colorbar(sc, ax=ax, label="long-term value per 100 users")
    # Pareto frontier of (revenue, retention) over trials.
    order = np.argsort(rev)[::-1]
    best_ret, frontier = -np.inf, []
    for i in order:
        if ret[i] > best_ret:
            frontier.append(i)
            best_ret = ret[i]
    fr = sorted(frontier, key=lambda i: rev[i])
    ax.plot([rev[i] for i in fr], [ret[i] for i in fr], "k--", lw=1, label="revenue–retention frontier")
    markers = {"tuned": ("*", "red"), "default": ("s", "tab:blue"), "myopic": ("X", "tab:orange"),
               "myopic, max ad load": ("P", "tab:purple")}
    for row in tune["held_out"]["table"]:
        m, c = markers.get(row["config"], ("o", "grey"))
        ax.scatter([row["revenue"]], [row["retained_share"]], marker=m, color=c, s=160, edgecolor="k", zorder=5,
                   label=f"{row['config']} (held-out seeds)")
    ax.set_xlabel("ad revenue per 100 users over the horizon")
    ax.set_ylabel("share of users retained at the horizon")
    ax.set_title("Revenue–retention frontier of the collator search")
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_position(audits: dict, path: Path) -> None:
    pos = audits["position"]
    curve = pos["curve"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    p = np.array([r["position"] for r in curve])
    ax.plot(p, p.astype(float) ** (-pos["error"]["true_power"]), "k-", label=f"simulator truth θ_p = p^-{pos['error']['true_power']:g}")
    est = np.array([r["relative"] for r in curve])
    lo = np.array([r["relative_low"] for r in curve])
    hi = np.array([r["relative_high"] for r in curve])
    ax.errorbar(p, est, yerr=[est - lo, hi - est], fmt="o", capsize=3, label="estimated from randomised simulator logs (95% CI)")
    if pos.get("obd"):
        obd = pos["obd"]
        q = np.array([r["position"] for r in obd]) + 0.1
        e = np.array([r["relative"] for r in obd])
        ax.errorbar(q, e, yerr=[e - np.array([r["relative_low"] for r in obd]), np.array([r["relative_high"] for r in obd]) - e],
                    fmt="s", color="tab:red", capsize=3, label="Open Bandit Dataset (uniform random, 95% CI)")
    ax.set_xlabel("position")
    ax.set_ylabel("examination relative to position 1")
    ax.set_title("Position bias: known curve, estimate, real-data estimate")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_popularity(audits: dict, path: Path) -> None:
    rows = list(audits.get("popularity_real") or []) + [
        {**r, "variant": "sim: " + r["variant"]} for r in audits["simulator"]["variants"]]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.5))
    labels = [r["variant"].replace(" (", "\n(").replace(" + ", "\n+ ") for r in rows]
    for ax, key, title in zip(axes, ("exposure_gini", "long_tail_share", "coverage"),
                              ("exposure Gini (lower = fairer)", "long-tail share of exposure", "catalogue coverage")):
        ax.barh(range(len(rows)), [r[key] for r in rows], color=["tab:blue" if not l.startswith("sim") else "tab:green" for l in labels])
        ax.set_yticks(range(len(rows)), labels, fontsize=7)
        ax.set_title(title)
    fig.suptitle("Popularity bias: real MovieLens top-20 (blue) and simulator exposure (green)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_feedback(audits: dict, path: Path) -> None:
    weeks = audits["simulator"]["weeks"]
    fig, axes = plt.subplots(1, 4, figsize=(15, 4))
    for name, rows in weeks.items():
        w = [r["week"] for r in rows]
        for ax, key in zip(axes, ("interest_entropy", "unique_topics_consumed", "unique_creators_consumed", "creator_exposure_gini")):
            ax.plot(w, [r[key] for r in rows], "o-", label=name)
            ax.set_title(key.replace("_", " "))
            ax.set_xlabel("simulated week")
    axes[0].legend(fontsize=7)
    fig.suptitle("Feedback loop and creators over simulated weeks")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def build_report(out: Path) -> Path:
    """Rebuild OUT/report.md and the PNGs from OUT/tune.json and OUT/audits.json (either may be absent)."""
    out = Path(out)
    parts = ["# Collator tuning and bias audits", ""]
    tune_path, audit_path = out / "tune.json", out / "audits.json"
    if tune_path.exists():
        tune = json.loads(tune_path.read_text())
        plot_frontier(tune, out / "frontier.png")
        s = tune["settings"]
        parts += [
            "## Tuned collator vs myopic vs default (held-out seeds)", "",
            f"Search: {s['algorithm']}, {len(tune['trials'])} trials × {s['seeds']} seeds, {s['users']} users × {s['days']} days; "
            f"held-out: seeds {tune['held_out']['seeds']}. Long-term value (LTV) per 100 users = revenue + "
            f"{s['click_value']:g}·clicks + {s['retained_user_value']:g}·retained users. Command: `{s['command']}`.", "",
            _table(tune["held_out"]["table"],
                   ["config", "long_term_value", "ltv_ci_low", "ltv_ci_high", "revenue", "engagement_value", "retention_value",
                    "retained_share", "day1_revenue", "ads_per_page"],
                   ["config", "LTV", "95% CI low", "95% CI high", "revenue", "engagement", "retention", "retained",
                    "day-1 revenue", "ads seen/page"]), "",
            "Paired differences on the same held-out seeds (common random numbers), mean [95% CI]:", "",
            _table([{"comparison": k, **{c: f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]" for c, v in d.items()}}
                    for k, d in tune["held_out"]["paired"].items()],
                   ["comparison", "long_term_value", "day1_revenue", "revenue", "retention_value", "engagement_value"],
                   ["comparison", "Δ LTV", "Δ short-term (day-1) revenue", "Δ horizon revenue", "Δ retention value", "Δ engagement value"]), "",
            f"Chosen weights (written to `{tune['yaml']}`): " + ", ".join(f"{k}={_fmt(v)}" for k, v in tune["best_params"].items()), "",
            "![frontier](frontier.png)", "",
        ]
    if audit_path.exists():
        audits = json.loads(audit_path.read_text())
        plot_position(audits, out / "position_bias.png")
        plot_popularity(audits, out / "popularity.png")
        plot_feedback(audits, out / "feedback_loop.png")
        pos = audits["position"]
        err, tr = pos["error"], pos["training"]
        parts += [
            "## Position bias", "",
            f"Result randomisation on {pos['n_impressions']} simulated impressions (top {len(pos['curve'])} shuffled): "
            f"max |θ̂_p/θ̂_1 − θ_p/θ_1| = {err['max_abs_error']:.4f}, mean {err['mean_abs_error']:.4f}, "
            f"fitted power {err['fitted_power']:.3f} (truth {err['true_power']:g}), CI coverage {err['ci_coverage']:.2f}.", "",
            f"Ranker (MultiTaskDCN, training/ranker.py `train_loop`) on {int(tr['train_impressions'])} confounded impressions, "
            f"NDCG@10 against true affinity on held-out users: naive {tr['ndcg10_naive']:.4f} ± {Z(tr['ndcg10_naive_se'])}, "
            f"position-aware {tr['ndcg10_position_aware']:.4f} ± {Z(tr['ndcg10_position_aware_se'])}; paired gain "
            f"{tr['ndcg10_gain']:.4f} ± {tr['ndcg10_gain_ci_half']:.4f} (95%); the logging score alone {tr['ndcg10_production_score']:.4f}.", "",
        ]
        if pos.get("obd"):
            parts += ["Open Bandit Dataset sample (`obp` wheel, campaign 'all', uniform-random policy):", "",
                      _table(pos["obd"], ["position", "n", "clicks", "ctr", "ctr_low", "ctr_high", "relative", "relative_low", "relative_high"]),
                      "", pos.get("obd_note", ""), ""]
        else:
            parts += ["The `obp` wheel was not available or holds no sample: no real-data position estimate.", ""]
        parts += ["![position bias](position_bias.png)", "", "## Popularity bias and mitigations", ""]
        if audits.get("popularity_real"):
            parts += ["Real data (MovieLens-100k, per-user temporal split, top-20 per user):", "",
                      _table(audits["popularity_real"], ["variant", "exposure_gini", "long_tail_share", "coverage", "recall@20"]), ""]
        parts += ["Simulator (examined organic impressions over the horizon, default collator):", "",
                  _table(audits["simulator"]["variants"], ["variant", "exposure_gini", "long_tail_share", "coverage",
                                                           "creator_exposure_gini", "creators_quit", "clicks", "long_term_value"]), "",
                  "### Mitigations: effect on the audit metric and cost in engagement", "",
                  _table(audits.get("mitigations", []), ["mitigation", "where", "audit_metric", "before", "after", "engagement_cost"]), "",
                  "![popularity](popularity.png)", "", "## Feedback loop and creators", ""]
        for name, rows in audits["simulator"]["weeks"].items():
            parts += [f"{name}:", "", _table(rows, ["week", "active_users", "unique_topics_consumed", "unique_creators_consumed",
                                                    "interest_entropy", "creators_exposed", "creator_exposure_gini", "creators_quit"]), ""]
        parts += ["![feedback loop](feedback_loop.png)", ""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path


def Z(se: float) -> str:
    return f"{1.96 * se:.4f}" if se == se else "n/a"
