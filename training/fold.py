"""`rayfeed train` folds the items published while the app served into the version it trains.

The item stream is read whole from the served app's Redis (REDIS_URL, or the one `rayfeed serve`
started) and folded into the dataset before any model is fitted (app/freshness/fold.py), so the
new version indexes, ranks and catalogues them like every other item. Without a reachable
Redis nothing is folded and nothing is lost: the items stay in the stream, and every replica of
the new version serves them from it as before; the training log says so.
"""
from __future__ import annotations

from collections.abc import Callable

from app.data.ids import IdMaps
from app.data.tables import Dataset
from app.freshness.fold import fold_published
from app.freshness.published import PublishedItems
from app.state._redis import fail_fast_client
from app.state.errors import StoreUnavailable
from app.state.items import read_whole_stream
from training.event_log import find_served_redis_url

STREAM_THROUGH = "item_stream_through"  # dataset meta and manifest key: the last entry folded
STREAM_READ_TIMEOUT_S = 10.0  # a training run can wait for a page of the stream; serving cannot


def fold_stream_items(dataset: Dataset, config, previous: IdMaps | None,
                      log: Callable[[str], None] = print) -> Dataset:
    url = find_served_redis_url(config)
    if url is None:
        log("published items: no Redis to read the item stream from (REDIS_URL): none folded")
        return dataset
    client = fail_fast_client(url, STREAM_READ_TIMEOUT_S, max_connections=2)
    try:
        entries = read_whole_stream(client)
    except StoreUnavailable as exc:
        log(f"published items: none folded, the item stream could not be read ({exc}); "
            "they keep serving from the stream")
        return dataset
    finally:
        client.close()
    folded, report = fold_published(dataset, PublishedItems().apply(entries, caught_up=True), previous)
    log(report.render())
    if entries:  # the manifest records it: `rayfeed items trim` removes what this version holds
        folded.meta[STREAM_THROUGH] = entries[-1].entry_id
    return folded
