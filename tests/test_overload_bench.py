"""benchmarks/overload.py: its variants and how the refusal CPU is worked out."""
import argparse

import pytest

from benchmarks.overload import (ALL_STEPS, STEPS, VARIANTS, combined, named_variants, stage_cpu_ms_per_200,
                                 with_refusal_cost, with_stage_slowdown)


def _parser() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(prog="rayfeed bench overload")


def test_named_variants_add_api_settings_and_refuse_unknown_ones(capsys):
    known = named_variants(["fixed3:admission_target_s=0,max_inflight_feeds=3", "old:shed_delay_s=0.1"], _parser())
    assert known["fixed3"] == {"admission_target_s": 0, "max_inflight_feeds": 3}
    assert known["old"] == {"shed_delay_s": 0.1} and known["held"] == VARIANTS["held"] == {}
    with pytest.raises(SystemExit):
        named_variants(["fast:shed_dely_s=0"], _parser())
    assert "'shed_dely_s=0': expected KEY=VALUE with KEY one of api.*" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        named_variants(["no-settings"], _parser())
    assert "expected NAME:KEY=VALUE" in capsys.readouterr().err


def test_every_variant_starts_from_a_polite_reference_step():
    assert all(steps[0] == ("honour", 4) for steps in STEPS.values()) and ALL_STEPS[0] == ("honour", 4)


def _step(ok: int, refused: int, proxy: float, ingress: float, stages: float) -> dict:
    return {"ok": ok, "refused": refused,
            "role_cpu_s": {"ProxyActor": proxy, "Ingress": ingress, "Ranking": stages}}


def test_refusal_cpu_is_what_the_front_spent_beyond_its_feeds():
    reference = _step(100, 0, 1.0, 3.0, 4.0)  # 40 ms of proxy + ingress per feed
    storm = _step(50, 100, 1.5, 2.5, 2.0)  # the feeds' share 2.0 s: 2.0 s left for 100 refusals
    with_refusal_cost([reference, storm])
    assert storm["cpu_ms_per_refusal"] == pytest.approx(20.0)
    assert storm["refusal_cpu_share"] == pytest.approx(2.0 / 6.0)
    assert reference["cpu_ms_per_refusal"] is None  # too few refusals to say




def test_stage_cpu_counts_only_the_processes_behind_the_ingress():
    step = _step(50, 100, proxy=1.5, ingress=2.5, stages=2.0)  # refusals load only the front
    assert stage_cpu_ms_per_200(step) == pytest.approx(40.0)
    assert stage_cpu_ms_per_200({**step, "ok": 0}) is None


def test_stage_slowdown_is_the_stages_cpu_per_200_against_the_runs_lowest():
    fast, slow, idle = {"stage_cpu_ms_per_200": 25.0}, {"stage_cpu_ms_per_200": 35.0}, {"stage_cpu_ms_per_200": None}
    with_stage_slowdown([fast, slow, idle])  # a step with no 200s has no figure
    assert fast["stage_slowdown"] == 1.0 and slow["stage_slowdown"] == pytest.approx(1.4)
    assert idle["stage_slowdown"] is None


def _run(rps: float, p99: float, ok: int, refused: int, ranking_s: float) -> dict:
    return {"step": "closed c=16 immediate", "throughput_rps": rps, "p99_ms": p99, "ok": ok, "refused": refused,
            "sent": ok + refused, "statuses": {"200": ok, "503": refused},
            "role_cpu_s": {"ProxyActor": 1.0, "Ingress": 2.0, "Ranking": ranking_s}}


def test_repeats_report_the_median_run_and_the_summed_counts():
    runs = [_run(40.0, 250.0, 600, 100, 6.0), _run(24.0, 420.0, 360, 150, 6.0), _run(38.0, 280.0, 570, 110, 6.0)]
    for run, drain in zip(runs, (1.0, 4.0, 2.5)):
        run["drain_s"] = drain
    step = combined(runs)
    assert step["drain_s"] == 2.5  # what is not a median comes from the run of median goodput
    assert step["throughput_rps"] == 38.0 and step["p99_ms"] == 280.0  # the slow repeat decides nothing
    assert (step["ok"], step["refused"], step["sent"]) == (1530, 360, 1890)
    assert step["statuses"] == {"200": 1530, "503": 360}
    assert step["role_cpu_s"]["Ranking"] == 18.0 and step["role_cpu_s"]["Auction"] == 0.0
    assert step["stage_cpu_ms_per_200"] == pytest.approx(1000 * 18.0 / 1530)
    assert [r["throughput_rps"] for r in step["repeats"]] == [40.0, 24.0, 38.0]
    assert combined(runs[:1]) is runs[0]  # one run is reported as it is
