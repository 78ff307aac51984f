"""The offline monitor report behind `rayfeed monitor`: compare a current window with a baseline.

Inputs are two tables (pandas DataFrames, or CSV/Parquet paths for the CLI) with columns:
- feature columns: any numeric column not named below (nulls allowed; they count as missing);
- `pred_<head>`: model output per head (e.g. pred_click, pred_like) — scores and calibration;
- `label_<head>`: observed 0/1 outcome per head, needed in `current` for calibration;
- optional `user_id` with `creator_id` and/or `topic_id`: diversity (distinct per user);
- optional `event_type` (impression, click, ...): CTR and engagement rate, compared as
  business metrics (relative drop) when both tables have it.
The baseline plays the training data: PSI bins come from it.

    python -m observability.report BASELINE.csv CURRENT.parquet --out reports/monitor
    python -m observability.report --demo --out reports/monitor     # synthetic drifted data

Writes psi_features.png, reliability_<head>.png and scores_<head>.png into `out_dir`, prints
and returns the text table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from observability.config import ObservabilityConfig
from observability.monitors import (
    MonitorResult,
    MonitorSuite,
    MonitorWindow,
    Severity,
    TrainingBaseline,
    business_rates,
    calibration,
    diversity,
)

RESERVED = {"user_id", "item_id", "creator_id", "topic_id", "event_type", "request_id", "ts"}


def _heads(frame: pd.DataFrame) -> list[str]:
    return sorted(c[len("pred_"):] for c in frame.columns if c.startswith("pred_"))


def _feature_columns(frame: pd.DataFrame) -> list[str]:
    return sorted(
        c for c in frame.columns
        if c not in RESERVED and not c.startswith(("pred_", "label_")) and pd.api.types.is_numeric_dtype(frame[c])
    )


def _diversity(frame: pd.DataFrame) -> dict[str, float]:
    if "user_id" not in frame:
        return {}
    return {
        dim: diversity(frame["user_id"].to_numpy(), frame[f"{dim}_id"].to_numpy())
        for dim in ("creator", "topic") if f"{dim}_id" in frame
    }


def _business(frame: pd.DataFrame) -> dict[str, float]:
    """CTR and engagement rate (a drop is bad). Hide rate is left out: for it a rise is bad."""
    if "event_type" not in frame:
        return {}
    rates = business_rates(frame["event_type"].astype(str).to_numpy())
    return {k: rates[k] for k in ("ctr", "engagement_rate")}


def evaluate_frames(
    baseline: pd.DataFrame, current: pd.DataFrame, config: ObservabilityConfig | None = None
) -> tuple[list[MonitorResult], TrainingBaseline]:
    """Fit a TrainingBaseline on `baseline` and grade `current` against it."""
    config = config or ObservabilityConfig()
    features = [c for c in _feature_columns(baseline) if c in current]
    heads = _heads(baseline)
    fitted = TrainingBaseline.fit(
        {c: baseline[c].to_numpy(np.float64) for c in features if baseline[c].notna().any()},
        {h: baseline[f"pred_{h}"].to_numpy(np.float64) for h in heads},
        config.psi_bins,
        business=_business(baseline),
        diversity=_diversity(baseline),
    )
    window = MonitorWindow(
        features={c: current[c].to_numpy(np.float64) for c in features},
        scores={h: current[f"pred_{h}"].to_numpy(np.float64) for h in heads if f"pred_{h}" in current},
        outcomes={
            h: (current[f"pred_{h}"].to_numpy(np.float64), current[f"label_{h}"].to_numpy(np.float64))
            for h in _heads(current) if f"label_{h}" in current
        },
        business=_business(current) if "event_type" in baseline else {},
        diversity=_diversity(current),
    )
    return MonitorSuite(fitted, config).evaluate(window), fitted


def format_table(results: list[MonitorResult]) -> str:
    rows = [("monitor", "subject", "value", "warn", "critical", "status")]
    rows += [(r.monitor, r.subject, f"{r.value:.4f}", f"{r.warn:g}", f"{r.critical:g}", str(r.severity).upper())
             for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    counts = {s: sum(r.severity is s for r in results) for s in Severity}
    lines.append(
        f"\n{len(results)} monitors: {counts[Severity.CRITICAL]} critical, {counts[Severity.WARN]} warn, "
        f"{counts[Severity.OK]} ok, {counts[Severity.NO_DATA]} without data"
    )
    return "\n".join(lines)


def _plots(baseline: pd.DataFrame, current: pd.DataFrame, results: list[MonitorResult],
           config: ObservabilityConfig, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    psi = [r for r in results if r.monitor == "feature_psi"]
    if psi:
        fig, ax = plt.subplots(figsize=(8, 0.35 * len(psi) + 1.5))
        colours = {Severity.OK: "tab:green", Severity.WARN: "tab:orange", Severity.CRITICAL: "tab:red"}
        ax.barh([r.subject for r in psi], [r.value for r in psi], color=[colours.get(r.severity, "grey") for r in psi])
        for level, style in ((config.thresholds.psi.warn, "--"), (config.thresholds.psi.critical, "-")):
            ax.axvline(level, color="black", linestyle=style, linewidth=0.8)
        ax.set_xlabel("PSI vs baseline")
        ax.set_title("Feature drift")
        fig.tight_layout()
        written.append(out_dir / "psi_features.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    for head in _heads(current):
        if f"label_{head}" in current:
            report = calibration(current[f"pred_{head}"], current[f"label_{head}"], config.calibration_bins, head)
            bins = [b for b in report.bins if b.count]
            fig, ax = plt.subplots(figsize=(5, 5))
            ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=0.8)
            ax.plot([b.mean_predicted for b in bins], [b.observed_rate for b in bins], marker="o")
            ax.set(xlabel="mean predicted", ylabel="observed rate", xlim=(0, 1), ylim=(0, 1),
                   title=f"{head}: ECE {report.ece:.3f}, predicted/observed {report.ratio:.3f}")
            fig.tight_layout()
            written.append(out_dir / f"reliability_{head}.png")
            fig.savefig(written[-1], dpi=100)
            plt.close(fig)
        fig, ax = plt.subplots(figsize=(6, 4))
        for name, frame in (("baseline", baseline), ("current", current)):
            if f"pred_{head}" in frame:
                values = frame[f"pred_{head}"].dropna().to_numpy()
                ax.hist(values, bins=40, density=True, histtype="step", label=name)
        ax.set(xlabel=f"pred_{head}", ylabel="density", title=f"{head} scores")
        ax.legend()
        fig.tight_layout()
        written.append(out_dir / f"scores_{head}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


def run_monitor_report(
    baseline: pd.DataFrame,
    current: pd.DataFrame,
    out_dir: str | Path,
    config: ObservabilityConfig | None = None,
) -> str:
    """Grade `current` against `baseline`, write plots into `out_dir`, return the report text."""
    config = config or ObservabilityConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results, _ = evaluate_frames(baseline, current, config)
    written = _plots(baseline, current, results, config, out)
    text = format_table(results) + "\n" + "\n".join(f"wrote {p}" for p in written)
    (out / "report.txt").write_text(text + "\n")
    return text


def load_frame(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix in (".csv", ".gz", ".txt"):
        return pd.read_csv(path)
    raise ValueError(f"{path}: expected a .csv or .parquet file")


def make_demo_frames(n: int = 5000, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A baseline and a drifted current window: `age` shifts, `item_ctr_7d` loses 3% of values,
    P(click) is over-predicted by 25%, creators concentrate."""
    rng = np.random.default_rng(seed)

    def frame(shift: float, null_frac: float, bias: float, creators: int) -> pd.DataFrame:
        age = rng.normal(35 + shift, 10, n)
        popularity = rng.lognormal(0, 1, n)
        item_ctr = rng.beta(2, 30, n)
        item_ctr[rng.random(n) < null_frac] = np.nan
        p_click = 1 / (1 + np.exp(-(-2.5 + 0.4 * np.log(popularity) + 3 * np.nan_to_num(item_ctr, nan=0.06))))
        p_like = np.clip(p_click * 0.4, 0, 1)
        return pd.DataFrame({
            "user_id": rng.integers(0, 200, n),
            "creator_id": rng.integers(0, creators, n),
            "topic_id": rng.integers(0, 18, n),
            "age": age,
            "popularity": popularity,
            "item_ctr_7d": item_ctr,
            "pred_click": np.clip(p_click * bias, 0, 1),
            "pred_like": p_like,
            "label_click": (rng.random(n) < p_click).astype(int),
            "label_like": (rng.random(n) < p_like).astype(int),
        })

    return frame(0.0, 0.0, 1.0, 300), frame(6.0, 0.03, 1.25, 10)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The monitor command's arguments (shared by `rayfeed monitor` and `python -m observability.report`)."""
    parser.add_argument("baseline", nargs="?", help="baseline table (.csv or .parquet)")
    parser.add_argument("current", nargs="?", help="current window table (.csv or .parquet)")
    parser.add_argument("--out", default="reports/monitor", help="directory for plots and report.txt")
    parser.add_argument("--demo", action="store_true", help="use synthetic drifted data instead of files")
    return parser


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.demo:
        baseline, current = make_demo_frames()
    elif args.baseline and args.current:
        baseline, current = load_frame(args.baseline), load_frame(args.current)
    else:
        parser.error("give BASELINE and CURRENT files, or --demo")
    print(run_monitor_report(baseline, current, args.out))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="rayfeed monitor", description=__doc__.split("\n\n")[0]))
    return run(parser.parse_args(argv), parser)


if __name__ == "__main__":
    sys.exit(main())
