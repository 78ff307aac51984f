"""`rayfeed replay --quick` end to end on the small synthetic world: every strategy in one table."""
from __future__ import annotations

import json

import pytest

from config import ConfigError, load_config
from cli.main import build_parser
from training.replay import QUICK_OVERRIDES, build_strategies, format_table, run, split_timeline, write_outputs

STRATEGIES = ("static", "dynamic_embeddings", "naive_incremental", "microbatch_regularised",
              "ensemble:naive_incremental", "ensemble:microbatch_regularised")


def _quick(**replay):
    return load_config(None, {**QUICK_OVERRIDES, "freshness": {
        **QUICK_OVERRIDES["freshness"],
        "replay": {**QUICK_OVERRIDES["freshness"]["replay"], "base_fraction": 0.5, "window_s": 3 * 86_400.0, **replay},
    }})


def test_quick_replay_reports_every_strategy_on_test_windows_only(small_world, tmp_path) -> None:
    result = run(small_world, _quick(), log=lambda m: None)

    assert result.summary["strategy"].tolist() == list(STRATEGIES)
    assert set(result.per_window["phase"]) == {"valid", "test"}
    test_windows = result.per_window[result.per_window["phase"] == "test"]["window"].nunique()
    assert (result.summary["windows"] == test_windows).all() and test_windows >= 2
    assert result.summary.set_index("strategy").loc["static", "recall_diff"] == 0
    assert ((result.summary["recall_mean"] >= 0) & (result.summary["recall_mean"] <= 1)).all()
    assert set(result.weights) == set(STRATEGIES[4:])
    assert all(set(w) == {"new", "recent", "returning"} for w in result.weights.values())

    write_outputs(result, tmp_path, "rayfeed replay --quick")
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert [r["strategy"] for r in saved["summary"]] == list(STRATEGIES)
    assert (tmp_path / "replay.png").stat().st_size > 10_000
    table = format_table(result)
    assert all(f"| {s} |" in table for s in STRATEGIES)


def test_the_ensemble_needs_its_members_listed_first(small_world) -> None:
    config = _quick()
    base_period, _, start = split_timeline(small_world.interactions, 0.5)
    for order in (("ensemble", "static", "microbatch_regularised"), ("static", "ensemble:naive_incremental")):
        bad = config.freshness.model_copy(update={"strategies": order})
        with pytest.raises(ValueError, match="needs"):
            build_strategies(None, None, base_period, bad)
    with pytest.raises(ValueError, match="unknown"):
        build_strategies(None, None, base_period, config.freshness.model_copy(update={"strategies": ("oracle",)}))


def test_replay_command_is_registered_and_the_config_validated() -> None:
    args = build_parser().parse_args(["replay", "--quick", "--out", "x"])
    assert args.quick and str(args.out) == "x"
    with pytest.raises(ConfigError, match="max_windows"):
        load_config(None, {"freshness": {"replay": {"validation_windows": 6, "max_windows": 3}}})
