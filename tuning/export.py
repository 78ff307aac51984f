"""The user simulator's logs as a dataset in the table contract, with the truth that drew them.

`rayfeed data export simulator DIR` plays the simulator (tuning/simulator.py) over the world of
the published artifact and writes what a production feed would have logged:

  * an impression for every organic slot served, at its position, with its request id;
  * a click where the simulated user clicked (examined with θ_p, then clicked with σ(a_ui):
    position bias is in the log, as in a real one) and a hide where they hid;
  * for each click, engagement drawn from the same true preference q = σ(a_ui):
    like ~ Bernoulli(LIKE_RATE · q), share ~ Bernoulli(SHARE_RATE · q), and a watch of
    watch_seconds_cap · q · U(0.5, 1.5) seconds (capped);
  * the catalogue and users of the artifact's dataset, in the same ids.

`truth.parquet` beside the tables holds each impression's preference q and examination θ_p, so
a model trained on the log can be scored against what generated it
(benchmarks/simulator_recovery.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

LIKE_RATE = 0.6
SHARE_RATE = 0.15
SEED = 11


def simulator_event_log(impressions, watch_seconds_cap: float, seed: int = SEED) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events in the contract's interactions columns, the truth per impression)."""
    rng = np.random.default_rng(seed)
    imp = pd.DataFrame([vars(i) for i in impressions])
    base = {"user_id": imp["user_id"].to_numpy(np.int64), "item_id": imp["item_id"].to_numpy(np.int64),
            "request_id": imp["request_id"].to_numpy(object), "position": imp["position"].to_numpy(np.int64)}
    ts = imp["ts"].to_numpy(np.float64)
    frames = [pd.DataFrame({**base, "event": "impression", "timestamp": ts, "value": np.nan})]
    clicked, hidden = imp["clicked"].to_numpy(bool), imp["hidden"].to_numpy(bool)
    q = imp["preference"].to_numpy(np.float64)
    n = len(imp)
    like = clicked & (rng.random(n) < LIKE_RATE * q)
    share = clicked & (rng.random(n) < SHARE_RATE * q)
    watch = np.minimum(watch_seconds_cap * q * rng.uniform(0.5, 1.5, n), watch_seconds_cap)
    for mask, event, delay, value in ((clicked, "click", 2.0, None), (like, "like", 30.0, None),
                                      (share, "share", 40.0, None), (clicked, "watch", 20.0, watch),
                                      (hidden, "hide", 3.0, None)):
        rows = {k: v[mask] for k, v in base.items()}
        frames.append(pd.DataFrame({**rows, "event": event, "timestamp": ts[mask] + delay,
                                    "value": value[mask] if value is not None else np.nan}))
    events = pd.concat(frames, ignore_index=True).sort_values(["timestamp", "user_id"], kind="stable",
                                                               ignore_index=True)
    truth = pd.DataFrame({**{k: base[k] for k in ("user_id", "item_id", "request_id", "position")},
                          "timestamp": ts, "preference": q, "examination": imp["examination"].to_numpy(np.float64),
                          "clicked": clicked})
    return events, truth


def export_simulator_logs(config, directory: str | Path, users: int, days: int,
                          log: Callable[[str], None] = print) -> dict[str, int]:
    from app.bootstrap import load_artifacts
    from app.data.export import catalogue_tables, export_events
    from app.data.storage import write_table
    from tuning.config import SimulationConfig
    from tuning.simulator import Simulation
    from tuning.world import world_from_artifacts

    loaded = load_artifacts(config)
    sim_config = SimulationConfig(days=days, n_users=users)
    world = world_from_artifacts(loaded, config, sim_config, n_users=users, log=log)
    simulation = Simulation(world, config.collator, sim_config, seed=SEED, log_impressions=True)
    simulation.run(days, progress=log)
    events, truth = simulator_event_log(simulation.impressions, config.data.tables.watch_seconds_cap)
    rows = {"interactions": export_events(events, directory)}
    for name, table in catalogue_tables(loaded.dataset).items():
        write_table(table, directory, name)
        rows[name] = table.num_rows
    truth.to_parquet(Path(directory) / "truth.parquet", index=False)
    rows["truth"] = len(truth)
    return rows
