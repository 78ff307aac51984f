"""The served app's event log as training data: `rayfeed data export events DIR`.

Reads the whole retained event stream (`rf:events`, or each of its partitions: impressions with their positions and request
ids, and the engagements on them, as clients posted them to /v1/events), maps every id back to the
dataset's own (the serving artifact's maps; a new user by the id the client named), and writes it
as the contract's `interactions` table beside the artifact's items, users and social edges. The
next `rayfeed train` on that directory learns from what was actually shown, impressions included.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from app.artifacts import resolve_version
from app.data import load_dataset_for
from app.data.export import catalogue_tables, export_events
from app.data.storage import write_table
from app.state._redis import fail_fast_client
from app.state.events import EventPartitions, decode_entries

PAGE = 10_000


def find_served_redis_url(config, given: str | None = None) -> str | None:
    """The served app's Redis: the one given, REDIS_URL (config), or the one `rayfeed serve`
    started (runs/serve/state.json); None when there is none."""
    if given or config.redis_url:
        return given or config.redis_url
    state = Path(__file__).resolve().parents[1] / "runs" / "serve" / "state.json"
    try:
        return json.loads(state.read_text())["redis_url"]
    except (OSError, KeyError, json.JSONDecodeError):
        return None


def served_redis_url(config, given: str | None) -> str:
    url = find_served_redis_url(config, given)
    if url is None:
        raise SystemExit("no Redis to read the event stream from: pass --redis-url, set REDIS_URL, "
                         "or start the app with `rayfeed serve`")
    return url


def read_stream(client, partitions: int = 1) -> pd.DataFrame:
    """Every retained item event of the stream (each of its `partitions`, one slot at a time on a
    Redis Cluster), in arrival order (stream ids: to the millisecond across partitions); ad events are
    the auction's."""
    rows = []
    for key in EventPartitions.of(client, partitions).keys():
        after = "-"
        while True:
            batch = client.xrange(key, min=after, max="+", count=PAGE)
            for entry_id, event in decode_entries(batch):
                if event.item_id is not None:
                    ms, _, seq = (entry_id.decode() if isinstance(entry_id, bytes) else entry_id).partition("-")
                    rows.append({"user_id": event.user_id, "user_ref": event.user_ref, "item_id": event.item_id,
                                 "event": event.type, "timestamp": event.ts, "value": event.watch_seconds,
                                 "position": event.position, "request_id": event.request_id,
                                 "_order": (int(ms), int(seq or 0))})
            if len(batch) < PAGE:
                break
            last = batch[-1][0].decode() if isinstance(batch[-1][0], bytes) else batch[-1][0]
            after = "(" + last
    rows.sort(key=lambda row: row.pop("_order"))
    return pd.DataFrame(rows, columns=["user_id", "user_ref", "item_id", "event", "timestamp", "value", "position",
                                       "request_id"])


def export_served_events(config, directory: str | Path, redis_url: str | None = None) -> dict[str, int]:
    version = resolve_version(config.artifacts)
    dataset = load_dataset_for(config.data, version.path)
    client = fail_fast_client(served_redis_url(config, redis_url), 10.0, max_connections=2)
    events = read_stream(client, config.api.event_stream_partitions)
    if dataset.ids is not None:
        known = dataset.ids.users.to_external(events["user_id"])
        events["user_id"] = [k if k is not None else ref for k, ref in zip(known, events["user_ref"])]
        events["item_id"] = dataset.ids.items.to_external(events["item_id"])
    events["value"] = pd.to_numeric(events["value"], errors="coerce")
    events["position"] = pd.to_numeric(events["position"], errors="coerce")
    rows = {"interactions": export_events(events.drop(columns=["user_ref"]), directory)}
    for name, table in catalogue_tables(dataset).items():
        write_table(table, directory, name)
        rows[name] = table.num_rows
    return rows
