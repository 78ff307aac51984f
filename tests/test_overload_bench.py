"""benchmarks/overload.py: its variants and how the refusal CPU is worked out."""
import argparse

import pytest

from benchmarks.overload import ALL_STEPS, STEPS, VARIANTS, named_variants, with_refusal_cost


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
