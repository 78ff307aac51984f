"""The offline monitor report: table, plots, CLI entry, CSV/Parquet inputs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from observability.report import evaluate_frames, load_frame, main, make_demo_frames, run_monitor_report


def test_demo_report_flags_the_planted_drift(tmp_path):
    baseline, current = make_demo_frames(n=3000)
    text = run_monitor_report(baseline, current, tmp_path)
    lines = {tuple(line.split()[:2]): line for line in text.splitlines() if line and not line.startswith(("-", "wrote"))}
    assert "CRITICAL" in lines["feature_psi", "age"]
    assert "OK" in lines["feature_psi", "popularity"]
    assert "CRITICAL" in lines["calibration", "click"]
    assert "CRITICAL" in lines["diversity", "creator"]
    for name in ("psi_features.png", "reliability_click.png", "scores_click.png", "report.txt"):
        assert (tmp_path / name).stat().st_size > 0


def test_same_data_is_all_ok_and_business_rates(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({
        "f": rng.normal(size=400),
        "pred_click": np.full(400, 0.25),
        "label_click": np.arange(400) % 4 == 0,
        "event_type": ["impression", "impression", "impression", "click"] * 100,
    })
    results, _ = evaluate_frames(frame, frame)
    assert {(r.monitor, r.severity.value) for r in results} == {
        ("null_rate", "ok"), ("feature_psi", "ok"), ("score_psi", "ok"), ("calibration", "ok"), ("business_drop", "ok"),
    }


def test_cli_reads_csv_and_parquet(tmp_path, capsys):
    baseline, current = make_demo_frames(n=500)
    baseline.to_csv(tmp_path / "b.csv", index=False)
    current.to_parquet(tmp_path / "c.parquet")
    assert main([str(tmp_path / "b.csv"), str(tmp_path / "c.parquet"), "--out", str(tmp_path / "out")]) == 0
    assert "feature_psi" in capsys.readouterr().out
    with pytest.raises(ValueError):
        load_frame(tmp_path / "x.json")
    with pytest.raises(SystemExit):
        main([])


def test_rayfeed_monitor_demo_writes_the_report_and_plots(tmp_path, capsys):
    """Through the installed CLI's parser (`rayfeed monitor --demo --out DIR`), not only report.main."""
    from cli.main import main as rayfeed

    assert rayfeed(["monitor", "--demo", "--out", str(tmp_path)]) == 0
    assert "CRITICAL" in capsys.readouterr().out
    assert (tmp_path / "report.txt").stat().st_size > 0
    assert len(list(tmp_path.glob("*.png"))) >= 3
