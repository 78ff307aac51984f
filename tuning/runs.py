"""End-to-end runs behind `rayfeed simulate`, `rayfeed tune` and `rayfeed audit`.

Each writes JSON into its output directory and rebuilds the report (tuning.report).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from app.collator.config import CollatorConfig
from config import RayfeedConfig, load_config
from tuning.config import SimulationConfig
from tuning.report import build_report
from tuning.search import (
    HeldOut,
    METRIC,
    TUNED_FIELDS,
    collator_config,
    held_out_evaluation,
    myopic_config,
    myopic_max_load_config,
    run_search,
    save_json,
    write_collator_yaml,
)
from tuning.simulator import simulate
from tuning.world import SimWorld, world_from_artifacts

Progress = Callable[[str], None]
OBD_WHEEL_GLOB = "data_cache/obp/obp-*.whl"
OBD_WHEEL = "obp==0.4.1"  # the Open Bandit Pipeline wheel that ships the OBD sample


def load_world(config: RayfeedConfig, sim: SimulationConfig, progress: Progress = print) -> SimWorld:
    from app.bootstrap import load_artifacts

    started = time.perf_counter()
    loaded = load_artifacts(config)
    world = world_from_artifacts(loaded, config, sim, log=progress)
    progress(f"world: {world.name}, {world.n_users} users, pools of {sim.system.pool_size} "
             f"({time.perf_counter() - started:.0f}s)")
    return world


def run_simulate(config: RayfeedConfig, sim: SimulationConfig, collator: CollatorConfig, seed: int,
                 out: Path | None, progress: Progress = print) -> dict[str, float]:
    world = load_world(config, sim, progress)
    result = simulate(world, collator, sim, seed=seed, progress=progress)
    o = result.objective
    progress(f"long-term value {o[METRIC]:.2f} per 100 users = revenue {o['revenue']:.2f} + engagement "
             f"{o['engagement_value']:.2f} + retention {o['retention_value']:.2f} (retained {o['retained_share']:.1%}, "
             f"{o['clicks']:.0f} clicks, {o['ads_per_page']:.2f} ads seen per page) in {result.seconds:.1f}s")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_json(out / "simulate.json", {"collator": collator.model_dump(mode="json"), "seed": seed,
                                          "objective": o, "days": result.days, "weeks": result.weeks})
    return o


def comparison_configs(best: CollatorConfig, base: CollatorConfig) -> dict[str, CollatorConfig]:
    return {"tuned": best, "default": base, "myopic": myopic_config(base), "myopic, max ad load": myopic_max_load_config(base)}


def run_tune(config: RayfeedConfig, sim: SimulationConfig, samples: int, seeds: int, eval_seeds: int, out: Path,
             command: str, progress: Progress = print, eval_only: bool = False) -> dict:
    """Search (unless `eval_only`: reuse OUT/tune.json's trials), then the held-out comparison;
    held-out runs already in tune.json for the same configuration and seed are reused."""
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "tune.json").read_text()) if (out / "tune.json").exists() else None
    if eval_only and previous is None:
        raise FileNotFoundError(f"{out / 'tune.json'}: nothing to re-evaluate; run the search first")
    world = load_world(config, sim, progress)
    if eval_only:
        trials, best_params = previous["trials"], previous["best_params"]
        settings = previous["settings"]
        settings["command"] += f"; re-evaluated: {command}"
    else:
        progress(f"search: Optuna TPE via Ray Tune, {samples} trials × {seeds} seeds, {sim.n_users} users × {sim.days} days")
        search = run_search(world, sim, samples, list(range(seeds)), sim.days, out / "ray", progress)
        trials, best_params = search.trials, search.best_params
        settings = {"algorithm": "Optuna TPE (ray.tune.search.optuna.OptunaSearch), 2 concurrent trials",
                    "samples": samples, "seeds": seeds, "users": sim.n_users, "days": sim.days, "command": command,
                    "click_value": sim.objective.click_value, "retained_user_value": sim.objective.retained_user_value,
                    "search_seconds": search.seconds}
    best = collator_config(best_params, config.collator)
    configs = comparison_configs(best, config.collator)
    held_seeds = list(range(10_000, 10_000 + eval_seeds))
    reuse = _reusable_runs(previous, configs, held_seeds, sim) if previous else {}
    todo = {name: c for name, c in configs.items() if name not in reuse}
    progress(f"held-out evaluation on new seeds {held_seeds}" + (f" (reusing {sorted(reuse)})" if reuse else ""))
    runs = dict(reuse)
    if todo:
        runs.update(held_out_evaluation(world, sim, todo, held_seeds, sim.days, progress).runs)
    held = HeldOut({name: runs[name] for name in configs}, held_seeds)
    keys = (METRIC, "day1_revenue", "revenue", "retention_value", "engagement_value")
    paired = {f"tuned − {other}": {k: list(held.paired("tuned", other, k)) for k in keys} for other in configs if other != "tuned"}
    m, lo, hi = paired["tuned − myopic"][METRIC]
    yaml_path = write_collator_yaml(
        out / "best_collator.yaml", best,
        note=f"LTV {held.table()[0][METRIC]:.2f} per 100 users on held-out seeds {held_seeds}; "
             f"tuned − myopic {m:.2f} [{lo:.2f}, {hi:.2f}] (95% paired t-interval)",
    )
    load_config(yaml_path)  # the fragment must load exactly as the serving app will load it
    data = {
        "settings": settings,
        "trials": trials,
        "best_params": {k: getattr(best, k) for k in TUNED_FIELDS},
        "held_out": {"seeds": held_seeds, "table": held.table(), "paired": paired, "runs": held.runs,
                     "configs": {n: c.model_dump(mode="json") for n, c in configs.items()},
                     "sim": sim.model_dump(mode="json")},
        "yaml": str(yaml_path),
    }
    save_json(out / "tune.json", data)
    report = build_report(out)
    for row in held.table():
        progress(f"  {row['config']:>20}: LTV {row[METRIC]:.2f} [{row['ltv_ci_low']:.2f}, {row['ltv_ci_high']:.2f}] "
                 f"revenue {row['revenue']:.2f} day-1 revenue {row['day1_revenue']:.2f} retained {row['retained_share']:.1%}")
    for name, d in paired.items():
        m, lo, hi = d[METRIC]
        progress(f"  {name}: ΔLTV {m:.2f} [{lo:.2f}, {hi:.2f}]; Δ day-1 revenue {d['day1_revenue'][0]:.2f}")
    progress(f"wrote {yaml_path} and {report}")
    return data


def _reusable_runs(previous: dict, configs: dict[str, CollatorConfig], seeds: list[int], sim: SimulationConfig) -> dict:
    """Held-out runs of tune.json whose configuration, seeds and simulator settings are unchanged."""
    held = previous.get("held_out", {})
    if held.get("seeds") != seeds or held.get("sim", sim.model_dump(mode="json")) != sim.model_dump(mode="json"):
        return {}
    if previous["settings"].get("users") != sim.n_users or previous["settings"].get("days") != sim.days:
        return {}
    stored = held.get("configs")
    if stored is None:  # files written before configurations were stored: the three standard ones
        best = collator_config(previous["best_params"])
        stored = {n: c.model_dump(mode="json") for n, c in comparison_configs(best, CollatorConfig()).items()
                  if n in held.get("runs", {})}
    return {n: held["runs"][n] for n, c in configs.items()
            if n in held.get("runs", {}) and stored.get(n) == c.model_dump(mode="json")}


def _obd_wheel() -> Path | None:
    """The obp wheel (fetched once with `pip download --no-deps`, never installed: only its
    bundled OBD sample is read). None when PyPI cannot be reached."""
    found = sorted(Path(".").glob(OBD_WHEEL_GLOB))
    if not found:
        target = Path(OBD_WHEEL_GLOB).parent
        target.mkdir(parents=True, exist_ok=True)
        fetched = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", OBD_WHEEL, "-d", str(target)],
            capture_output=True, text=True,
        )
        if fetched.returncode != 0:
            return None
        found = sorted(Path(".").glob(OBD_WHEEL_GLOB))
    return found[-1] if found else None


def run_audits(config: RayfeedConfig, sim: SimulationConfig, out: Path, collator: CollatorConfig | None = None,
               real: bool = True, seed: int = 0, penalty: float = 0.5, progress: Progress = print) -> dict:
    from tuning.audits import (
        estimate_position_curve,
        max_curve_error,
        obd_position_estimate,
        popularity_audit_real,
        position_training_audit,
        randomised_click_log,
        simulator_audit,
    )

    out.mkdir(parents=True, exist_ok=True)
    world = load_world(config, sim, progress)
    collator = collator or config.collator
    n_lists = 20 * world.n_users * 5
    log = randomised_click_log(world, sim, n_lists, 10, seed)
    curve = estimate_position_curve(log)
    error = max_curve_error(curve, sim)
    progress(f"position curve from {len(log)} randomised impressions: max abs error {error['max_abs_error']:.4f}, "
             f"fitted power {error['fitted_power']:.3f} (truth {error['true_power']})")
    training = position_training_audit(world, sim, n_lists=n_lists, seed=seed, progress=progress)
    wheel = _obd_wheel()
    obd = obd_position_estimate(wheel) if wheel else None
    obd_note = ("" if obd is None else
                f"{int(obd['clicks'].sum())} clicks in {int(obd['n'].sum())} impressions: the ratios' intervals all include 1, "
                "so the sample cannot tell whether slots 2-3 are examined less than slot 1; it is consistent with the "
                f"simulator's θ_2/θ_1 = {2 ** -sim.choice.position_power:.2f} and θ_3/θ_1 = {3 ** -sim.choice.position_power:.2f} "
                "only in the sense that it cannot reject them either." if (obd['relative_low'] <= 1).all() and (obd['relative_high'] >= 1).all()
                else f"{int(obd['clicks'].sum())} clicks in {int(obd['n'].sum())} impressions.")
    popularity_real = popularity_audit_real(world_dataset(config), config, penalty=penalty, progress=progress) if real else None
    simulated = simulator_audit(world, sim, collator, seed=seed, penalty=penalty, progress=progress)
    audits = {
        "position": {"curve": curve.to_dict("records"), "error": error, "training": training, "n_impressions": len(log),
                     "obd": None if obd is None else obd.to_dict("records"), "obd_note": obd_note},
        "popularity_real": None if popularity_real is None else popularity_real.to_dict("records"),
        "simulator": simulated,
    }
    audits["mitigations"] = mitigation_table(audits)
    save_json(out / "audits.json", audits)
    report = build_report(out)
    progress(f"wrote {out / 'audits.json'} and {report}")
    return audits


def world_dataset(config: RayfeedConfig):
    from app.data import load_dataset

    return load_dataset(config.data)


def mitigation_table(audits: dict) -> list[dict]:
    """One row per mitigation: its audit metric before → after and its engagement cost."""
    rows = []
    real = audits.get("popularity_real")
    if real:
        off, on, rr = real[0], real[1], real[2]
        rows.append({"mitigation": "logQ correction (two-tower)", "where": "MovieLens top-20",
                     "audit_metric": "exposure Gini / long-tail share",
                     "before": f"{off['exposure_gini']:.3f} / {off['long_tail_share']:.3f}",
                     "after": f"{on['exposure_gini']:.3f} / {on['long_tail_share']:.3f}",
                     "engagement_cost": f"Recall@20 {off['recall@20']:.4f} → {on['recall@20']:.4f}"})
        rows.append({"mitigation": "exposure-aware reranker", "where": "MovieLens top-20 (on logQ top-200)",
                     "audit_metric": "exposure Gini / long-tail share",
                     "before": f"{on['exposure_gini']:.3f} / {on['long_tail_share']:.3f}",
                     "after": f"{rr['exposure_gini']:.3f} / {rr['long_tail_share']:.3f}",
                     "engagement_cost": f"Recall@20 {on['recall@20']:.4f} → {rr['recall@20']:.4f}"})
    base, mit = audits["simulator"]["variants"][0], audits["simulator"]["variants"][1]
    rows.append({"mitigation": "exposure-aware reranker", "where": "simulator (examined impressions)",
                 "audit_metric": "exposure Gini / long-tail share / creators quit",
                 "before": f"{base['exposure_gini']:.3f} / {base['long_tail_share']:.3f} / {base['creators_quit']:.0f}",
                 "after": f"{mit['exposure_gini']:.3f} / {mit['long_tail_share']:.3f} / {mit['creators_quit']:.0f}",
                 "engagement_cost": f"clicks/100 users {base['clicks']:.0f} → {mit['clicks']:.0f}; LTV {base['long_term_value']:.1f} → {mit['long_term_value']:.1f}"})
    weeks = audits["simulator"]["weeks"]
    names = list(weeks)
    b, m = weeks[names[0]], weeks[names[1]]
    rows.append({"mitigation": "exposure-aware reranker", "where": "simulator feedback loop",
                 "audit_metric": "interest entropy week 1 → last / topics consumed last week",
                 "before": f"{b[0]['interest_entropy']:.3f} → {b[-1]['interest_entropy']:.3f} / {b[-1]['unique_topics_consumed']:.2f}",
                 "after": f"{m[0]['interest_entropy']:.3f} → {m[-1]['interest_entropy']:.3f} / {m[-1]['unique_topics_consumed']:.2f}",
                 "engagement_cost": "(same runs as above)"})
    tr = audits["position"]["training"]
    rows.append({"mitigation": "position-aware ranker training", "where": "simulator logs",
                 "audit_metric": "NDCG@10 vs true affinity",
                 "before": f"{tr['ndcg10_naive']:.4f}", "after": f"{tr['ndcg10_position_aware']:.4f}",
                 "engagement_cost": f"none at serving (position neutral); gain {tr['ndcg10_gain']:.4f} ± {tr['ndcg10_gain_ci_half']:.4f}"})
    return rows


def sim_config_from_args(users: int | None, days: int | None, base: SimulationConfig | None = None) -> SimulationConfig:
    base = base or SimulationConfig()
    update = {}
    if users:
        update["n_users"] = users
    if days:
        update["days"] = days
    return SimulationConfig.model_validate({**base.model_dump(), **update})
