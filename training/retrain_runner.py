"""The retrain job runner: monitor triggers (and an optional schedule) → fine-tune → gate → hot swap.

    rf:retrain:requests  ──> RetrainRunner.step() ──> fine_tune() (Ray Train) ──> gate
    rf:events (group "trainer") ─┘                                      │ passed
                                           serving app  <── POST /admin/reload {"version": v}

One step at a time, rate-limited (`training.fine_tune.min_interval_s`, remembered in Redis so a
restarted runner keeps it): requests that arrive during the cool-down stay on the stream and are
served together by the next job. Every decision (job, refusal by the gate, suppression) is
logged and appended to `rf:retrain:jobs`. Stream events are read through a consumer group and
acknowledged only once a version containing them is published and swapped in: a crash or a gate
refusal leaves them pending, and the next job reads them again (the fine-tune de-duplicates by
event id, so nothing is counted twice).

Example:
    runner = RetrainRunner(config, http_reload("http://127.0.0.1:8000", token))
    record = runner.step()          # None when there was nothing to do
"""
from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import httpx

from config import RayfeedConfig
from app.data.tables import Dataset
from app.state.events import EventStream
from observability.retrain_requests import RETRAIN_REQUESTS_KEY, RetrainRequestStream
from training.fine_tune import engagement_interactions, event_log, fine_tune

log = logging.getLogger("rayfeed.retrain")

CURSOR_KEY = "rf:retrain:cursor"  # last retrain request consumed
LAST_JOB_KEY = "rf:retrain:last_job"  # unix seconds of the last job start
JOBS_KEY = "rf:retrain:jobs"  # one entry per decision, for operators and dashboards


@dataclass
class JobRecord:
    started_at: float
    trigger: str  # "monitor" | "schedule"
    reasons: str
    status: str  # "published" | "refused" | "suppressed" | "failed" | "skipped"
    parent: str | None = None
    version: str | None = None
    gate: dict = field(default_factory=dict)
    new_interactions: int = 0
    seconds: float = 0.0
    detail: str = ""


def http_reload(url: str, token: str, timeout_s: float = 30.0) -> Callable[[str], None]:
    """Ask the serving app to hot-swap a version (the admin API: every replica reconfigures)."""
    def reload(version: str) -> None:
        response = httpx.post(f"{url.rstrip('/')}/admin/reload", json={"version": version},
                              headers={"Authorization": f"Bearer {token}"}, timeout=timeout_s)
        if response.status_code != 200:
            raise RuntimeError(f"/admin/reload answered {response.status_code}: {response.text[:300]}")
    return reload


class RetrainRunner:
    def __init__(self, config: RayfeedConfig, reload: Callable[[str], None], *, use_ray: bool = True,
                 dataset: Dataset | None = None, clock: Callable[[], float] = time.time,
                 consumer: str | None = None) -> None:
        if not config.redis_url:
            raise ValueError("the retrain runner needs Redis (REDIS_URL): retrain requests and events live there")
        self.config, self.reload, self.use_ray, self.dataset, self.clock = config, reload, use_ray, dataset, clock
        self.consumer = consumer or f"{socket.gethostname()}-runner"

    def step(self) -> JobRecord | None:
        return asyncio.run(self._step())

    async def _step(self) -> JobRecord | None:
        from app.state._redis import async_fail_fast_client

        ft = self.config.training.fine_tune
        client = async_fail_fast_client(self.config.redis_url, 10.0, max_connections=4)  # one server or a cluster
        try:
            requests = RetrainRequestStream(client)
            cursor = (await client.get(CURSOR_KEY) or b"0-0").decode()
            pending = await requests.read(cursor, count=1000)
            last_job = float(await client.get(LAST_JOB_KEY) or 0.0)
            now = self.clock()
            scheduled = ft.schedule_s is not None and now - last_job >= ft.schedule_s
            if not pending and not scheduled:
                return None
            trigger = "monitor" if pending else "schedule"
            reasons = " | ".join(fields.get("reasons", "") for _, fields in pending) or "schedule"
            if last_job and now - last_job < ft.min_interval_s:
                record = JobRecord(now, trigger, reasons, "suppressed",
                                   detail=f"{now - last_job:.0f}s since the last job (min {ft.min_interval_s:.0f}s)")
                if pending:  # once per request batch, not once per poll
                    log.info("retrain suppressed: %s", record.detail)
                    await self._log(client, record)
                return record
            events = EventStream(client, self.config.api.event_stream_maxlen, self.config.api.event_dedup_ttl_s,
                                 partitions=self.config.api.event_stream_partitions)
            await events.ensure_group(ft.consumer_group)
            entries = await events.read_group(ft.consumer_group, self.consumer, 100_000, pending=True)
            while True:
                batch = await events.read_group(ft.consumer_group, self.consumer, 10_000)
                if not batch:
                    break
                entries += batch
            new = engagement_interactions([e for _, e in entries], ft.implied_ratings)
            new_events = event_log([e for _, e in entries])  # the ranker's labels, impressions included
            if trigger == "schedule" and len(new) < ft.min_new_events:
                await client.set(LAST_JOB_KEY, repr(now))
                return JobRecord(now, trigger, reasons, "skipped", detail=f"{len(new)} new engagements")
            await client.set(LAST_JOB_KEY, repr(now))
            record = JobRecord(now, trigger, reasons, "failed", new_interactions=len(new))
            try:
                outcome = await asyncio.to_thread(fine_tune, self.config, new, reason=reasons, use_ray=self.use_ray,
                                                  log=log.info, dataset=self.dataset, new_events=new_events)
                record.parent, record.gate, record.seconds = outcome.parent, asdict(outcome.gate), outcome.seconds
                if outcome.version is None:
                    record.status, record.detail = "refused", outcome.gate.summary
                else:
                    await asyncio.to_thread(self.reload, outcome.version)
                    record.status, record.version = "published", outcome.version
                    await events.ack(ft.consumer_group, [entry for entry, _ in entries])
            except Exception as exc:  # noqa: BLE001 - recorded; events stay pending for the next job
                record.detail = f"{type(exc).__name__}: {exc}"
                log.exception("fine-tune job failed")
            if pending:
                await client.set(CURSOR_KEY, pending[-1][0])
            await self._log(client, record)
            return record
        finally:
            await client.aclose()

    async def _log(self, client, record: JobRecord) -> None:
        log.warning("retrain %s (%s): %s %s", record.status, record.trigger, record.version or "", record.detail)
        await client.xadd(JOBS_KEY, {"record": json.dumps(asdict(record), default=str)}, maxlen=10_000, approximate=True)

    def watch(self, poll_s: float, max_jobs: int | None = None) -> None:
        """Step forever (or until `max_jobs` jobs ran), sleeping `poll_s` between idle steps."""
        ran = 0
        while max_jobs is None or ran < max_jobs:
            record = self.step()
            if record is not None and record.status in ("published", "refused", "failed"):
                ran += 1
            else:
                time.sleep(poll_s)


__all__ = ["CURSOR_KEY", "JOBS_KEY", "JobRecord", "RETRAIN_REQUESTS_KEY", "RetrainRunner", "http_reload"]
