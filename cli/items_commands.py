"""`rayfeed items trim`: bound the item stream once a trained version holds what it published.

    rayfeed items trim                      # the entries LATEST's training folded in
    rayfeed items trim --version v2026...   # those a given version folded in

`rayfeed train` folds every published item into the version it trains and records the last
stream entry it read (`item_stream_through` in the manifest). Replicas of that version, or a
later one, serve those items from the artifact, so the entries are dead weight in Redis and in
every replica's catch-up. Run this once every replica serves that version or a later one: a
replica of an earlier version (a rollback) no longer sees the items published before it was
trained, until it is rolled forward again. Ids stay taken and a retried publish stays
"unchanged" (the digests and seqs are kept).
"""
from __future__ import annotations

import argparse
import sys


def cmd_trim(args: argparse.Namespace) -> int:
    from config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return trim(config, args.version, args.redis_url)


def trim(config, version_name: str | None, redis_url: str | None) -> int:
    """Exit code: 0 trimmed, 1 Redis did not answer, 2 nothing to trim by (named)."""
    from app.artifacts import ArtifactNotFound, artifact_store
    from app.state._redis import fail_fast_client
    from app.state.errors import StoreUnavailable
    from app.state.items import trim_through
    from training.event_log import find_served_redis_url
    from training.fold import STREAM_READ_TIMEOUT_S, STREAM_THROUGH

    try:
        store = artifact_store(config.artifacts)
        version = store.get(version_name or store.latest_name())
    except (ArtifactNotFound, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    through = version.manifest().get(STREAM_THROUGH)
    if through is None:
        print(f"error: version {version.version} folded no item stream (trained without a reachable Redis, or "
              "before any publish): nothing it holds can be trimmed", file=sys.stderr)
        return 2
    url = find_served_redis_url(config, redis_url)
    if url is None:
        print("error: no Redis to trim (--redis-url, REDIS_URL, or the one `rayfeed serve` started)", file=sys.stderr)
        return 2
    client = fail_fast_client(url, STREAM_READ_TIMEOUT_S, max_connections=2)
    try:
        removed, left = trim_through(client, through)
    except StoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(f"item stream: {removed} entries up to {through} removed (folded into {version.version}); {left} left")
    return 0


def register(subparsers) -> None:
    items = subparsers.add_parser("items", help="the published items' stream: trim what a trained version holds")
    sub = items.add_subparsers(dest="items_command", required=True)
    trim = sub.add_parser("trim", help="remove the stream entries a trained version folded in (docs/freshness.md)")
    trim.add_argument("--version", default=None, help="the version whose folded entries go (default: LATEST)")
    trim.add_argument("--redis-url", default=None, help="the served app's Redis (default: REDIS_URL or the one "
                                                        "`rayfeed serve` started)")
    trim.set_defaults(func=cmd_trim)
