"""Monitor: the live monitor loop in the served app (logic in observability.live_monitor).

One replica (the join of predictions and events needs both in one process; see
observability.live_monitor). Started on the first reconfigure, like the admin-override poller:
a background task reads `rf:predictions` and `rf:events` every `poll_seconds`, publishes the
monitor gauges every `publish_seconds` and writes retrain requests to `rf:retrain:requests`.
Nothing calls it on the request path; /readyz does not wait for it (monitoring must not take
serving down). Settings arrive through `reconfigure` (observability.live_monitor, thresholds,
windows); the join state and windows survive a reconfigure.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass

from ray import serve

from app.artifacts import ArtifactVersion
from config import RayfeedConfig
from app.state._redis import async_fail_fast_client
from app.state.events import EventPartitions
from deployments.common import (
    DeploymentSettings, Loaded, ReloadableDeployment, load_once, observability, resolve_version,
)
from observability.live_monitor import BASELINE_FILE, LiveMonitor
from observability.monitors import TrainingBaseline

log = logging.getLogger("rayfeed.serve")

CONSUMER = "monitor-0"  # one replica: a restarted one takes over its predecessor's unacknowledged events


@dataclass(frozen=True)
class MonitorState:
    config: RayfeedConfig
    version: str
    baseline: Loaded[TrainingBaseline | None]
    tables_updated_at: float  # the artifact's publication (its feature tables' last update), unix seconds


def load_baseline(version: ArtifactVersion) -> TrainingBaseline | None:
    """The artifact's training baseline; None (PSI monitors off, said loudly) when it has none."""
    path = version.path / "organic" / BASELINE_FILE
    if not path.exists():
        log.error("monitor: artifact %s has no %s, so feature/score PSI is not monitored; add one with "
                  "`python -m training.monitor_baseline --version %s` (new trainings write it)",
                  version.version, path, version.version)
        return None
    return TrainingBaseline.load(path)


@serve.deployment(name="Monitor")
class Monitor(ReloadableDeployment[MonitorState]):
    stage_name = "monitor"

    def __init__(self) -> None:
        super().__init__()
        self._live: LiveMonitor | None = None
        self._loop: asyncio.Task | None = None

    def build_state(self, config: RayfeedConfig, settings: DeploymentSettings, previous: MonitorState | None) -> MonitorState:
        version = resolve_version(config)
        baseline = load_once(previous.baseline if previous else None, (str(version.root), version.version),
                             lambda: load_baseline(version))
        return MonitorState(config, version.version, baseline, version.published_at())

    def after_swap(self, state: MonitorState, settings: DeploymentSettings) -> None:
        config = state.config
        if not config.redis_url:
            return
        if self._live is None:
            timeout_s = config.observability.live_monitor.redis_timeout_s
            client = async_fail_fast_client(config.redis_url, timeout_s, max_connections=2)
            partitions = EventPartitions.of(client, config.api.event_stream_partitions)
            self._live = LiveMonitor(client, config.observability, observability(config), state.baseline.value,
                                     consumer=CONSUMER, event_keys=partitions.keys(), model_version=state.version,
                                     tables_updated_at=state.tables_updated_at)
        else:
            self._live.reconfigure(config.observability, state.baseline.value, state.version, state.tables_updated_at)
        if self._loop is None or self._loop.done():  # one loop for the replica's life; idle while disabled
            self._loop = asyncio.get_running_loop().create_task(self._live.run())

    async def stats(self) -> dict:
        """Counts, the last graded results and rates (operators, tests)."""
        await self.state()
        return asdict(self._live.stats) if self._live is not None else {}
