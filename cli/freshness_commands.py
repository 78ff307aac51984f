"""`rayfeed replay`: replay the dataset in time order through every freshness strategy.

    rayfeed replay --out runs/replay              # MovieLens-100k (the configured dataset)
    rayfeed replay --quick --out /tmp/replay      # a few windows with a small model

Prints progress per window, then the table (test windows only); writes per_window.csv,
per_user.csv, summary.json, table.md and replay.png under --out (training/replay.py).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def cmd_replay(args: argparse.Namespace) -> int:
    from config import ConfigError, load_config
    from app.data import load_dataset
    from training.replay import QUICK_OVERRIDES, format_buckets, format_table, run, write_outputs

    try:
        config = load_config(args.config, QUICK_OVERRIDES if args.quick else None)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    dataset = load_dataset(config.data)
    result = run(dataset, config, log=lambda m: print(m, flush=True))
    if result.summary.empty:
        print("no test window was scored: lower freshness.replay.validation_windows or min_window_users",
              file=sys.stderr)
        return 1
    command = "rayfeed " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    write_outputs(result, args.out, command)
    print(format_table(result))
    print(format_buckets(result))
    print(f"ensemble weights (dynamic share per context, learned on validation): {result.weights}")
    print(f"wrote {args.out}/per_window.csv, summary.json, table.md, replay.png ({result.meta['seconds']:.0f}s)")
    return 0


def register(subparsers) -> None:
    replay = subparsers.add_parser(
        "replay", help="prequential replay of the timeline through every model-freshness strategy"
    )
    replay.add_argument("--out", type=Path, default=Path("runs/replay"), help="directory for the table, CSVs and plot")
    replay.add_argument("--quick", action="store_true", help="a few windows and a small model (smoke test)")
    replay.set_defaults(func=cmd_replay)
