"""`rayfeed simulate`, `rayfeed tune` and `rayfeed audit`: the collator against the user simulator.

    rayfeed simulate --users 200 --days 21 [--collator runs/tune/best_collator.yaml | --beta 5]
    rayfeed tune --samples 16 --seeds 2 --eval-seeds 6 --users 200 --days 21 --out runs/tune
    rayfeed audit --users 200 --days 21 --out runs/tune

Each prints progress; tune and audit write JSON, PNGs and report.md under --out. The tuned
weights land in OUT/best_collator.yaml (`collator: {...}`), loadable with --config / load_config
and as serve_config.yaml user_config (see tuning/README.md).
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _configs(args: argparse.Namespace):
    from app.artifacts import ArtifactNotFound, artifact_store
    from config import load_config
    from tuning.runs import sim_config_from_args

    config = load_config(args.config)
    try:
        artifact_store(config.artifacts).latest_name()
    except ArtifactNotFound:
        print(f"no artifacts under {config.artifacts.root}: run `rayfeed train` first", file=sys.stderr)
        return None, None
    return config, sim_config_from_args(args.users, args.days)


def _collator(args: argparse.Namespace, base):
    from config import load_config
    from tuning.search import collator_config

    collator = load_config(args.collator).collator if args.collator else base
    params = {k: getattr(args, k) for k in ("alpha", "beta", "gamma") if getattr(args, k) is not None}
    return collator_config(params, collator) if params else collator


def cmd_simulate(args: argparse.Namespace) -> int:
    from tuning.runs import run_simulate

    config, sim = _configs(args)
    if config is None:
        return 2
    collator = _collator(args, config.collator)
    print(f"simulating {sim.n_users} users × {sim.days} days, seed {args.seed}, "
          f"α={collator.alpha:g} β={collator.beta:g} γ={collator.gamma:g}", flush=True)
    run_simulate(config, sim, collator, args.seed, args.out, progress=lambda m: print(m, flush=True))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from tuning.runs import run_tune

    config, sim = _configs(args)
    if config is None:
        return 2
    if args.samples < 3 or args.seeds < 1 or args.eval_seeds < 2:
        print("--samples must be >= 3, --seeds >= 1, --eval-seeds >= 2", file=sys.stderr)
        return 2
    command = "rayfeed " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    run_tune(config, sim, args.samples, args.seeds, args.eval_seeds, args.out, command,
             progress=lambda m: print(m, flush=True), eval_only=args.eval_only)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from tuning.runs import run_audits

    config, sim = _configs(args)
    if config is None:
        return 2
    run_audits(config, sim, args.out, collator=_collator(args, config.collator), real=not args.skip_real,
               seed=args.seed, penalty=args.penalty, progress=lambda m: print(m, flush=True))
    return 0


def _scale(p: argparse.ArgumentParser) -> None:
    p.add_argument("--users", type=int, default=None, help="simulated users (default 200)")
    p.add_argument("--days", type=int, default=None, help="simulated days (default 21)")


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collator", type=Path, default=None, help="a YAML with a `collator:` section (e.g. best_collator.yaml)")
    for name in ("alpha", "beta", "gamma"):
        p.add_argument(f"--{name}", type=float, default=None)


def register(subparsers) -> None:
    simulate = subparsers.add_parser("simulate", help="simulate users over weeks under one collator configuration")
    _scale(simulate)
    _weights(simulate)
    simulate.add_argument("--seed", type=int, default=0)
    simulate.add_argument("--out", type=Path, default=None, help="write simulate.json here")
    simulate.set_defaults(func=cmd_simulate)

    tune = subparsers.add_parser("tune", help="Ray Tune search of the collator weights against the simulator")
    _scale(tune)
    tune.add_argument("--samples", type=int, default=16, help="trials (configurations) to try")
    tune.add_argument("--seeds", type=int, default=2, help="simulator seeds per trial")
    tune.add_argument("--eval-seeds", type=int, default=6, help="new seeds for the held-out comparison")
    tune.add_argument("--out", type=Path, default=Path("runs/tune"))
    tune.add_argument("--eval-only", action="store_true",
                      help="skip the search: re-run the held-out comparison of OUT/tune.json's chosen point "
                           "(runs already there for the same configuration and seeds are reused)")
    tune.set_defaults(func=cmd_tune)

    audit = subparsers.add_parser("audit", help="position, popularity, feedback-loop and creator audits")
    _scale(audit)
    _weights(audit)
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--penalty", type=float, default=0.5, help="popularity penalty of the exposure-aware reranker")
    audit.add_argument("--skip-real", action="store_true", help="skip the MovieLens two-tower logQ audit (trains twice)")
    audit.add_argument("--out", type=Path, default=Path("runs/tune"))
    audit.set_defaults(func=cmd_audit)
