"""Ray Tune search of the collator's weights (α, β, γ) and ad-load target against the simulator.

    space      built from CollatorConfig's own Field declarations (ge/le bounds), optionally
               narrowed — never widened — by `SEARCH_NARROWING`; the hard blending rules
               (HARD_RULES) are policy and never searched;
    objective  mean long-term value over `seeds` simulator seeds per trial (common random
               numbers: every trial sees the same users and per-(user, day, page) streams);
    algorithm  Optuna's TPE sampler (a third of the trials random start-up) through
               `ray.tune.search.optuna.OptunaSearch`, two trials at a time on fractional CPUs;
    held out   the best, the default and the myopic configuration (revenue-maximising: β at
               its upper bound, γ = 0) are re-simulated on *new* seeds; the paired differences
               (same seed = same random numbers) get a 95% t-interval.

The chosen configuration is written as a YAML fragment `collator: {...}` that
`config.load_config` reads, and that serve_config.yaml's `user_config` takes verbatim
(see tuning/README.md).
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy import stats

from app.collator.config import CollatorConfig
from tuning.config import SimulationConfig
from tuning.simulator import simulate
from tuning.world import SimWorld

Progress = Callable[[str], None]

# What the tuner searches: the CollatorScore weights and the global ad-load target. The hard
# blending rules (no ads before position 3, at least 3 organic between ads, at most 1 ad per 5
# organic, the notification slot) are product policy, not tunables: they stay as configured.
TUNED_FIELDS: tuple[str, ...] = ("alpha", "beta", "gamma", "ad_load_target")
HARD_RULES: tuple[str, ...] = ("min_gap", "no_ads_before", "organic_per_ad", "notification_positions", "max_ads_per_page")
# Narrower ranges than the declarations where the declared range is pointless (an ad-load target
# of 100% cannot bind under the hard rules). Intersected with the bounds.
SEARCH_NARROWING: dict[str, tuple[float, float]] = {
    "ad_load_target": (0.0, 0.4),
}
METRIC = "long_term_value"


@dataclass(frozen=True)
class Bounds:
    name: str
    low: float
    high: float
    integer: bool


def declared_bounds(name: str, config_cls: type = CollatorConfig) -> Bounds:
    """The (ge/gt, le/lt) bounds a field declares; a field without both is not searchable."""
    info = config_cls.model_fields[name]
    low = high = None
    for meta in info.metadata:
        for attr in ("ge", "gt"):
            if getattr(meta, attr, None) is not None:
                low = float(getattr(meta, attr))
        for attr in ("le", "lt"):
            if getattr(meta, attr, None) is not None:
                high = float(getattr(meta, attr))
    if low is None or high is None:
        raise ValueError(f"{config_cls.__name__}.{name} declares no lower and upper bound: it cannot be searched")
    return Bounds(name, low, high, info.annotation is int)


def search_bounds(fields: Sequence[str] = TUNED_FIELDS, narrowing: Mapping[str, tuple[float, float]] | None = None,
                  config_cls: type = CollatorConfig) -> dict[str, Bounds]:
    """Declared bounds, intersected with `narrowing` (which may only shrink them)."""
    narrowing = SEARCH_NARROWING if narrowing is None else narrowing
    out = {}
    for name in fields:
        b = declared_bounds(name, config_cls)
        lo, hi = narrowing.get(name, (b.low, b.high))
        lo, hi = max(lo, b.low), min(hi, b.high)
        if lo > hi:
            raise ValueError(f"narrowing of {name} ({lo}, {hi}) lies outside its declared bounds ({b.low}, {b.high})")
        out[name] = Bounds(name, lo, hi, b.integer)
    return out


def search_space(fields: Sequence[str] = TUNED_FIELDS, narrowing: Mapping[str, tuple[float, float]] | None = None) -> dict[str, Any]:
    """Ray Tune's param_space, built from CollatorConfig's declarations."""
    from ray import tune

    space: dict[str, Any] = {}
    for name, b in search_bounds(fields, narrowing).items():
        space[name] = tune.randint(int(b.low), int(b.high) + 1) if b.integer else tune.uniform(b.low, b.high)
    return space


def collator_config(params: Mapping[str, Any], base: CollatorConfig | None = None) -> CollatorConfig:
    """`base` with the tuned fields replaced (validated: out-of-bounds values are errors)."""
    base = base or CollatorConfig()
    values = base.model_dump()
    for name, value in params.items():
        if name not in CollatorConfig.model_fields:
            raise KeyError(f"unknown collator field {name!r}")
        values[name] = int(round(value)) if CollatorConfig.model_fields[name].annotation is int else float(value)
    return CollatorConfig.model_validate(values)


def myopic_config(base: CollatorConfig | None = None) -> CollatorConfig:
    """Revenue-maximising weights: β at its declared upper bound, γ = 0 (ad-load rules as in `base`)."""
    return collator_config({"beta": declared_bounds("beta").high, "gamma": declared_bounds("gamma").low}, base)


def myopic_max_load_config(base: CollatorConfig | None = None) -> CollatorConfig:
    """The short-term revenue maximiser of the search space: myopic weights and the highest
    ad-load target searched (the hard blending rules stay as configured)."""
    b = search_bounds()
    return collator_config({"beta": b["beta"].high, "gamma": b["gamma"].low, "ad_load_target": b["ad_load_target"].high}, base)


def tuned_params(config: CollatorConfig, fields: Sequence[str] = TUNED_FIELDS) -> dict[str, Any]:
    return {name: getattr(config, name) for name in fields}


# -- statistics ------------------------------------------------------------------------------------

def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and its t-interval (lo, hi); a single value has an infinite interval."""
    x = np.asarray(values, dtype=np.float64)
    m = float(x.mean())
    if len(x) < 2:
        return m, float("-inf"), float("inf")
    half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return m, m - half, m + half


def paired_ci(a: Sequence[float], b: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean of a − b over paired runs (same seeds: common random numbers) with its t-interval."""
    return mean_ci(np.asarray(a, float) - np.asarray(b, float), level)


# -- evaluation ------------------------------------------------------------------------------------

def evaluate(world: SimWorld, collator: CollatorConfig, sim: SimulationConfig, seeds: Sequence[int],
             days: int | None = None) -> list[dict[str, float]]:
    return [simulate(world, collator, sim, seed=int(s), days=days).objective for s in seeds]


def aggregate(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean of every component, plus the long-term value's 95% CI."""
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    _, lo, hi = mean_ci([r[METRIC] for r in runs])
    out["ltv_ci_low"], out["ltv_ci_high"] = lo, hi
    return out


def _trainable(params: dict, world: SimWorld, sim: SimulationConfig, seeds: Sequence[int], days: int) -> None:
    from ray import tune

    collator = collator_config(params)
    runs = []
    for k, seed in enumerate(seeds):
        runs.append(simulate(world, collator, sim, seed=int(seed), days=days).objective)
        tune.report({**aggregate(runs), "seeds_done": k + 1})


@contextlib.contextmanager
def private_ray(num_cpus: int = 2) -> Iterator[None]:
    """A private local Ray for the search (never the Serve cluster another process may run)."""
    import ray

    if ray.is_initialized():
        yield
        return
    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False,
             logging_config=ray.LoggingConfig(log_level="ERROR"))
    try:
        yield
    finally:
        ray.shutdown()


@dataclass
class SearchResult:
    trials: list[dict[str, Any]]  # params + aggregated metrics per trial
    best_params: dict[str, Any]
    seconds: float


def run_search(world: SimWorld, sim: SimulationConfig, samples: int, seeds: Sequence[int], days: int,
               storage: Path, progress: Progress = print, concurrency: int = 2, searcher_seed: int = 0,
               cpus_per_trial: float = 0.5) -> SearchResult:
    """Optuna (TPE) over the declared space; default and myopic configurations are evaluated first
    (`points_to_evaluate`) so the search and the frontier always contain them."""
    from ray import tune
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    started = time.perf_counter()
    space = search_space()
    start_points = [tuned_params(CollatorConfig()), tuned_params(myopic_config())]
    import optuna

    # Fewer random start-up trials than Optuna's default 10: our budgets are a few dozen trials.
    sampler = optuna.samplers.TPESampler(n_startup_trials=max(3, samples // 3), seed=searcher_seed)
    searcher = ConcurrencyLimiter(
        OptunaSearch(metric=METRIC, mode="max", sampler=sampler, points_to_evaluate=start_points),
        max_concurrent=concurrency,
    )

    class PrintProgress(tune.Callback):
        completed = 0

        def on_trial_complete(self, iteration, trials, trial, **info):
            r = trial.last_result or {}
            PrintProgress.completed += 1
            done = PrintProgress.completed
            params = " ".join(f"{k}={trial.config[k]:.3g}" for k in TUNED_FIELDS)
            progress(f"  trial {done}/{samples}: LTV {r.get(METRIC, float('nan')):.1f} "
                     f"[{r.get('ltv_ci_low', float('nan')):.1f}, {r.get('ltv_ci_high', float('nan')):.1f}] "
                     f"revenue {r.get('revenue', float('nan')):.1f} retained {r.get('retained_share', float('nan')):.2f} | {params} "
                     f"({time.perf_counter() - started:.0f}s)")

    with private_ray():
        tuner = tune.Tuner(
            tune.with_resources(tune.with_parameters(_trainable, world=world, sim=sim, seeds=list(seeds), days=days),
                                {"cpu": cpus_per_trial}),
            param_space=space,
            tune_config=tune.TuneConfig(search_alg=searcher, num_samples=samples, metric=METRIC, mode="max"),
            run_config=tune.RunConfig(name="collator", storage_path=str(Path(storage).resolve()), verbose=0,
                                      callbacks=[PrintProgress()]),
        )
        grid = tuner.fit()
    trials = []
    for result in grid:
        if result.error or not result.metrics:
            continue
        row = {k: result.config[k] for k in TUNED_FIELDS}
        row.update({k: v for k, v in result.metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        trials.append(row)
    if not trials:
        raise RuntimeError("every tuning trial failed; see the Ray Tune logs under " + str(storage))
    best = max(trials, key=lambda r: r[METRIC])
    return SearchResult(trials, {k: best[k] for k in TUNED_FIELDS}, time.perf_counter() - started)


@dataclass
class HeldOut:
    """Held-out comparison on new seeds: per-configuration runs and paired differences."""

    runs: dict[str, list[dict[str, float]]]
    seeds: list[int]

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for name, runs in self.runs.items():
            row = {"config": name, **aggregate(runs)}
            rows.append(row)
        return rows

    def paired(self, a: str, b: str, key: str = METRIC) -> tuple[float, float, float]:
        return paired_ci([r[key] for r in self.runs[a]], [r[key] for r in self.runs[b]])


def held_out_evaluation(world: SimWorld, sim: SimulationConfig, configs: Mapping[str, CollatorConfig],
                        seeds: Sequence[int], days: int, progress: Progress = print) -> HeldOut:
    """Every configuration on the same new seeds, in parallel Ray tasks (one per config × seed)."""
    import ray

    with private_ray():
        world_ref = ray.put(world)

        @ray.remote(num_cpus=1)
        def one(world: SimWorld, collator: CollatorConfig, seed: int) -> dict[str, float]:
            return simulate(world, collator, sim, seed=seed, days=days).objective

        futures = {(name, s): one.remote(world_ref, c, int(s)) for name, c in configs.items() for s in seeds}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        pending = list(futures.values())
        keys = {v: k for k, v in futures.items()}
        results: dict[tuple[str, int], dict[str, float]] = {}
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            key = keys[done[0]]
            results[key] = ray.get(done[0])
            progress(f"  held-out {len(results)}/{len(futures)}: {key[0]} seed {key[1]}: LTV {results[key][METRIC]:.1f}")
    for (name, s) in futures:
        runs[name].append(results[(name, s)])
    return HeldOut(runs, [int(s) for s in seeds])


def write_collator_yaml(path: Path, config: CollatorConfig, fields: Sequence[str] = TUNED_FIELDS,
                        note: str = "") -> Path:
    """`collator: {...}` with the tuned fields: load_config(path) reads it; so does user_config."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"collator": {k: (round(float(v), 6) if isinstance(v, float) else v) for k, v in tuned_params(config, fields).items()}}
    header = "# Collator weights chosen by `rayfeed tune` against the user simulator.\n"
    if note:
        header += "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(header + yaml.safe_dump(body, sort_keys=False))
    return path


def save_json(path: Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=1, default=float))
