"""benchmarks/serve_floor.py: the no-op apps' work and how the figures are summarised."""
import time

import pytest
from ray.serve import Application

from benchmarks import serve_floor
from benchmarks.serve_floor import (DEFAULT_WORK_MS, VARIANTS, burn, measured_split, parse_work, scaled_work,
                                    summarise)


def test_burn_spends_the_threads_cpu_time():
    before = time.thread_time()
    burn(30.0)
    assert 0.030 <= time.thread_time() - before < 0.2
    before = time.thread_time()
    burn(0.0)
    assert time.thread_time() - before < 0.005


def test_work_overrides_and_bad_input_name_the_stage():
    work = parse_work("ranking=40, auction=0")
    assert work["ranking"] == 40.0 and work["auction"] == 0.0 and work["retrieval"] == DEFAULT_WORK_MS["retrieval"]
    with pytest.raises(SystemExit, match="unknown stage 'scoring'"):
        parse_work("scoring=3")
    with pytest.raises(SystemExit, match="ranking='fast' is not a number"):
        parse_work("ranking=fast")
    with pytest.raises(SystemExit, match="ranking=-2 is negative"):
        parse_work("ranking=-2")


def test_the_split_is_the_measured_one_unless_a_stage_went_untimed():
    measured = {"ingress": 1.0, "retrieval": 5.0, "ranking": 5.5, "reranking": 1.7, "auction": 2.5}
    assert measured_split(measured) == measured
    assert measured_split({**measured, "auction": 0.0}) == DEFAULT_WORK_MS
    assert measured_split({"retrieval": 5.0}) == DEFAULT_WORK_MS


def test_scaled_work_keeps_the_split_and_reaches_the_total():
    scaled = scaled_work(DEFAULT_WORK_MS, 22.0)
    assert sum(scaled.values()) == pytest.approx(22.0)
    assert scaled["ranking"] / scaled["retrieval"] == pytest.approx(DEFAULT_WORK_MS["ranking"] / DEFAULT_WORK_MS["retrieval"])


def _step(label, rps, cpu, shed=0.0, errors=0.0, p50=10.0, p99=20.0):
    return {"step": label, "throughput_rps": rps, "server_cpu_ms_per_request": cpu, "rate_503": shed,
            "error_rate": errors, "p50_ms": p50, "p99_ms": p99}


def test_summary_counts_shed_steps_for_throughput_but_not_for_cost():
    results = {
        "ingress": {"steps": [_step("closed c=1", 100, 8.0), _step("closed c=8", 200, 6.0)]},
        "chain": {"steps": [_step("closed c=1", 30, 40.0), _step("closed c=8", 50, 36.0)]},
        "chain-work": {"steps": [_step("closed c=1", 15, 90.0, p50=60, p99=80), _step("closed c=8", 25, 70.0)]},
        # c=8 sheds 30 %: its accepted rate counts (the clients honour Retry-After), its CPU does not;
        # c=16 had transport errors: it counts for neither.
        "rayfeed": {"steps": [_step("closed c=1", 14, 100.0), _step("closed c=8", 20, 60.0, shed=0.3),
                              _step("closed c=16", 40, 30.0, errors=0.1)]},
    }
    summary = summarise(results, {"ingress": 2.0, "ranking": 20.0})
    apps, derived = summary["apps"], summary["derived"]
    assert apps["ingress"]["cpu_ms_per_request"] == 6.0 and apps["ingress"]["cpu_bound_rps"] == pytest.approx(2000 / 6)
    assert apps["chain-work"]["c1_p50_ms"] == 60 and apps["chain-work"]["c1_p99_ms"] == 80
    assert apps["rayfeed"]["best_rps"] == 20 and apps["rayfeed"]["cpu_ms_per_request"] == 100.0
    assert derived["stage_work_ms"] == 22.0
    assert derived["per_inner_call_cpu_ms"] == pytest.approx((36.0 - 6.0) / 4)
    assert derived["rayfeed_over_chain_work_cpu"] == pytest.approx(100 / 70)
    assert derived["rayfeed_over_chain_work_rps"] == pytest.approx(20 / 25)


def test_every_variant_but_rayfeed_builds_an_application():
    for variant in VARIANTS:
        if variant != "rayfeed":
            assert isinstance(serve_floor.floor_app(variant, dict(DEFAULT_WORK_MS)), Application)


@pytest.mark.parametrize("argv, message", [
    (["--variants", "chain,fused"], "unknown ['fused']"),
    (["--closed", "1,four"], "--closed must be comma-separated whole numbers"),
    (["--closed", "0"], "each >= 1"),
    (["--closed", "1,8", "--breakdown", "4"], "--breakdown 4 is not one of the --closed concurrencies [1, 8]"),
    (["--repeat", "0"], "--repeat must be 1 to 10, got 0"),
])
def test_bad_arguments_are_refused_by_name_before_anything_starts(capsys, argv, message):
    with pytest.raises(SystemExit):
        serve_floor.main(argv)
    assert message in capsys.readouterr().err


def test_per_process_cpu_is_per_request_and_drops_the_noise():
    before = {"Ranking": 10.0, "ProxyActor": 5.0, "gcs_server": 1.0}
    after = {"Ranking": 10.4, "ProxyActor": 5.2, "gcs_server": 1.00001, "redis-server": 0.05}
    assert serve_floor.per_request(before, after, 20) == pytest.approx({"Ranking": 20.0, "ProxyActor": 10.0, "redis-server": 2.5})


def test_repeated_passes_report_each_ratios_median():
    passes = [{"derived": {"rayfeed_over_chain_work_cpu": 1.14, "stage_work_ms": 16.0}},
              {"derived": {"rayfeed_over_chain_work_cpu": 1.02, "stage_work_ms": 16.0}},
              {"derived": {"rayfeed_over_chain_work_cpu": 1.05, "stage_work_ms": 16.0}},
              {"derived": {"stage_work_ms": 16.0}}]  # a pass whose rayfeed steps all shed: no ratio
    assert serve_floor.median_derived(passes) == {"rayfeed_over_chain_work_cpu": pytest.approx(1.05),
                                                  "stage_work_ms": 16.0}
