"""`rayfeed data validate|export`: your own data in the table contract (docs/data.md).

    rayfeed data validate URI                         every check; exit 0 clean, 1 warnings, 2 errors
    rayfeed data export movielens-100k DIR [--string-ids]   the built-in worlds as contract tables
    rayfeed data export synthetic DIR [--string-ids]
    rayfeed data export events DIR                    the served app's event stream, in your ids
    rayfeed data export simulator DIR [--users N --days D]  the user simulator's logs (known truth)

URI is a local path or a file://, s3://, gs://, hdfs:// URI (pyarrow's filesystems).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_validate(args: argparse.Namespace) -> int:
    from app.data.loading import validate_uri

    _, report = validate_uri(args.uri)
    print(report.render())
    return report.exit_code


def cmd_export(args: argparse.Namespace) -> int:
    from config import load_config

    config = load_config(args.config)
    if args.what in ("movielens-100k", "synthetic"):
        from app.data import load_dataset
        from app.data.export import export_dataset

        data = config.data.model_copy(update={"dataset": args.what})
        rows = export_dataset(load_dataset(data), args.dir, string_ids=args.string_ids)
    elif args.what == "events":
        from training.event_log import export_served_events

        rows = export_served_events(config, args.dir, redis_url=args.redis_url)
    else:
        from tuning.export import export_simulator_logs

        rows = export_simulator_logs(config, args.dir, users=args.users, days=args.days,
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"wrote {args.dir}: " + ", ".join(f"{name} {n} rows" for name, n in rows.items()))
    print(f"next: rayfeed data validate {args.dir}")
    return 0


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="your own data: validate it, or export a dataset or log in the contract")
    sub = data.add_subparsers(dest="data_command", required=True)
    validate = sub.add_parser("validate", help="check every table of a dataset (docs/data.md)")
    validate.add_argument("uri", help="the directory of tables: a local path or a storage URI")
    validate.set_defaults(func=cmd_validate)
    export = sub.add_parser("export", help="write a dataset or an event log as contract tables")
    export.add_argument("what", choices=("movielens-100k", "synthetic", "events", "simulator"))
    export.add_argument("dir", type=Path, help="the directory to write (parquet, one file per table)")
    export.add_argument("--string-ids", action="store_true", help="ids as strings: users u42, items m50, creators c7")
    export.add_argument("--redis-url", default=None, help="events: the served app's Redis (default: REDIS_URL or "
                                                          "the one `rayfeed serve` started)")
    export.add_argument("--users", type=int, default=300, help="simulator: simulated users")
    export.add_argument("--days", type=int, default=14, help="simulator: simulated days")
    export.set_defaults(func=cmd_export)
