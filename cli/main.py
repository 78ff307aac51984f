"""rayfeed command line.

    rayfeed train                      train on the configured dataset and publish artifacts
    rayfeed feed --user 42 --explain   print one blended page (trains first if no artifacts)
    rayfeed eval topk --interactions H.csv --users U.txt --k 50 --out TOPK.csv
    rayfeed bench quality|ann|ranking|pacing|collator|observability|million|floor|catalogue [args...]
    rayfeed monitor BASELINE CURRENT --out DIR | --demo
    rayfeed data validate URI | export movielens-100k|synthetic|events|simulator DIR
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import runpy
import sys
import uuid
from pathlib import Path

# Each module adds its subcommands with `register(subparsers)`; a command's code stays in its room.
COMMAND_MODULES: tuple[str, ...] = ("cli.tune_commands", "cli.serve_commands", "cli.freshness_commands",
                                    "cli.retrain_commands", "cli.data_commands", "cli.cluster_commands",
                                    "cli.items_commands")

BENCHMARKS = {
    "quality": "benchmarks/quality.py",
    "ann": "benchmarks/ann.py",
    "ranking": "benchmarks/ranking.py",
    "pacing": "benchmarks/pacing_sim.py",
    "collator": "benchmarks/collator_gap.py",
    "observability": "benchmarks/observability_overhead.py",
    "live-monitor": "benchmarks/live_monitor_overhead.py",
    "chaos": "benchmarks/chaos.py",
    "catalogue": "benchmarks/catalogue.py",
    "cold-start": "benchmarks/cold_start.py",
    "freshness": "benchmarks/freshness_delay.py",
    "million": "benchmarks/million_items.py",
    "live-apply": "benchmarks/live_apply.py",
    "floor": "benchmarks/serve_floor.py",
    "overload": "benchmarks/overload.py",
}


def _config(args: argparse.Namespace):
    from config import load_config

    return load_config(args.config)


def cmd_train(args: argparse.Namespace) -> int:
    return train(_config(args), no_ray=args.no_ray)


def train(config, no_ray: bool) -> int:
    from app.data import ids_to_extend, load_dataset
    from app.data.validation import InvalidDataset
    from training.fold import fold_stream_items
    from training.organic import train_and_publish

    previous = ids_to_extend(config.data, config.artifacts)  # indices never move between versions
    try:
        dataset = load_dataset(config.data, previous)
    except InvalidDataset as exc:  # the same report `rayfeed data validate` prints
        print(exc.report.render(), file=sys.stderr)
        print("training refused: fix the errors above (rayfeed data validate checks again)", file=sys.stderr)
        return exc.report.exit_code
    if dataset.meta.get("validation") and "OK" not in str(dataset.meta["validation"]).splitlines()[-1]:
        print(dataset.meta["validation"], flush=True)  # warnings: printed, training goes on
    dataset = fold_stream_items(dataset, config, previous, log=lambda m: print(m, flush=True))
    print(f"training on {dataset.name}: {dataset.n_users} users, {dataset.n_items} items, "
          f"{len(dataset.interactions)} interactions", flush=True)
    version = train_and_publish(dataset, config, use_ray=not no_ray, log=lambda m: print(m, flush=True))
    print(f"published {version.path}")
    return 0


def _ensure_artifacts(config, no_ray: bool) -> int:
    """Train when there is no artifact, or when the newest was trained on another dataset."""
    from app.artifacts import ArtifactNotFound, artifact_store
    from app.data import DatasetMismatch, check_trained_on

    try:
        check_trained_on(config.data, artifact_store(config.artifacts).latest().path)
        return 0
    except ArtifactNotFound:
        print(f"no artifacts under {config.artifacts.root}: training first (a few minutes on 2 cores)", flush=True)
    except DatasetMismatch as exc:
        print(f"{exc}: training first", flush=True)
    return train(config, no_ray)


def cmd_feed(args: argparse.Namespace) -> int:
    from app.bootstrap import build_feed_service, load_artifacts, world_clock
    from app.organic import OrganicRequest
    from app.state.local_redis import LocalRedis

    from app.api.errors import ApiError
    from app.api.ids import ApiIds

    config = _config(args)
    if _ensure_artifacts(config, args.no_ray):
        return 2
    loaded = load_artifacts(config)
    ids = ApiIds(loaded.dataset.ids)
    try:
        user = ids.user(ids.parse_query(args.user, "--user"), "--user")
    except ApiError as exc:
        print(f"--user: {exc.message}", file=sys.stderr)
        return 2
    if loaded.dataset.user_row(user) is None:
        print(f"--user: unknown user id {args.user}", file=sys.stderr)
        return 2
    local = None if config.redis_url else LocalRedis.start()
    try:
        clock = world_clock(loaded)
        service = build_feed_service(loaded, config, config.redis_url or local.url, clock)
        page = service.page(OrganicRequest(user, clock(), args.limit, uuid.uuid4().hex, explain=args.explain,
                                           external_user_id=args.user))
        print(render_page(page, loaded, explain=args.explain))
    finally:
        if local is not None:
            local.stop()
    return 0


def render_page(page, loaded, explain: bool) -> str:
    from app.feed import FeedPage
    from app.ranking.config import HEAD_COLUMNS

    assert isinstance(page, FeedPage) and page.organic.candidates is not None
    items = loaded.dataset.items.set_index("item_id")
    organic = page.organic.candidates
    row_of = {int(i): r for r, i in enumerate(organic.item_ids)}
    profile = loaded.dataset.user_row(page.request.user_id) or {}
    lines = [
        f"feed for user {page.request.user_id} (age {profile.get('age')}, {profile.get('occupation')}) "
        f"— artifacts {loaded.version.version}",
    ]
    for slot in page.slots:
        if slot.kind == "organic":
            item = items.loc[int(slot.ref_id)]
            line = f"{slot.position:>3}. [organic] {item['title']} ({', '.join(item['topics'])}; {item['content_rating']})"
            if explain:
                r = row_of[int(slot.ref_id)]
                heads = " ".join(f"{h}={organic.scores[h][r]:.3f}" for h in HEAD_COLUMNS.values())
                sources = [s.removeprefix("src_") for s in organic.features
                           if s.startswith("src_") and organic.features[s][r] > 0 and s != f"src_{organic.sources[r]}"]
                line += (f"\n       source={organic.sources[r]} (also: {', '.join(sources) or '-'}) final={organic.scores['final'][r]:.3f} "
                         f"{heads}\n       kept: passed seen/policy/content-rating filters, ranked in top "
                         f"{len(organic)}, survived MMR and the creator cap")
        elif slot.kind == "ad":
            ad = slot.item
            line = f"{slot.position:>3}. [ad]      ad {ad.ad_id} (campaign {ad.campaign_id}, {ad.category})"
            if explain:
                line += (f"\n       eCPM={ad.ecpm:.4f} price={ad.price:.4f} pCTR={ad.pctr:.4f} pCVR={ad.pcvr:.4f} "
                         f"pacing={ad.pacing_multiplier:.2f} slot_rank={ad.slot_rank}")
        else:
            line = f"{slot.position:>3}. [notification] {slot.item.text}"
        lines.append(line)
    if explain:
        reasons = page.organic.removed or {}
        lines.append("removed candidates by stage and reason:")
        lines += [f"  {n:>6}  {reason}" for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])]
        lines.append("stage timings: " + ", ".join(f"{r.name} {r.seconds * 1000:.1f}ms ({r.n_in}->{r.n_out})" for r in page.records))
        if page.body.get("ads_withheld"):
            lines.append(f"ads withheld: {page.body['ads_withheld']}")
        if page.assembled.collated.guardrails_fired:
            lines.append(f"guardrails fired: {', '.join(page.assembled.collated.guardrails_fired)}")
    return "\n".join(lines)


def cmd_eval_topk(args: argparse.Namespace) -> int:
    from app.evaluation.topk_export import InputFileError, write_topk
    from training.eval_topk import organic_recommender_factory

    config = _config(args)
    factory = None if args.model == "ease" else organic_recommender_factory(config, use_ray=not args.no_ray)
    try:
        rows = write_topk(factory, args.interactions, args.users, args.k, args.out)
    except InputFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    script = Path(__file__).resolve().parents[1] / BENCHMARKS[args.name]
    sys.argv = [str(script), *args.rest]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from observability.report import run

    return int(run(args, args.monitor_parser) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayfeed", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="a rayfeed YAML configuration file")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train on the configured dataset and publish artifacts")
    train.add_argument("--no-ray", action="store_true", help="train in-process instead of with Ray Train")
    train.set_defaults(func=cmd_train)

    feed = sub.add_parser("feed", help="print one blended feed page")
    feed.add_argument("--user", required=True, help="the user, in the dataset's own ids (42, u42)")
    feed.add_argument("--limit", type=int, default=20)
    feed.add_argument("--explain", action="store_true", help="show sources, per-head scores and filter reasons")
    feed.add_argument("--no-ray", action="store_true", help="if training is needed, train in-process")
    feed.set_defaults(func=cmd_feed)

    evaluate = sub.add_parser("eval", help="offline evaluation tools")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)
    topk = eval_sub.add_parser("topk", help="train on an interactions CSV and write each listed user's top-K")
    topk.add_argument("--interactions", type=Path, required=True, help="CSV: user_id,item_id,rating,timestamp")
    topk.add_argument("--users", type=Path, required=True, help="one user id per line")
    topk.add_argument("--k", type=int, default=50)
    topk.add_argument("--out", type=Path, required=True, help="CSV written: user_id,item_id,rank")
    topk.add_argument("--model", choices=("pipeline", "ease"), default="pipeline")
    topk.add_argument("--no-ray", action="store_true", help="train in-process instead of with Ray Train")
    topk.set_defaults(func=cmd_eval_topk)

    bench = sub.add_parser("bench", help="run a benchmark script")
    bench.add_argument("name", choices=sorted(BENCHMARKS))
    bench.add_argument("rest", nargs=argparse.REMAINDER)
    bench.set_defaults(func=cmd_bench)

    # The same arguments as observability.report.add_arguments, declared here so that building the
    # parser does not import pandas; not a REMAINDER pass-through (argparse keeps `--demo` from it).
    monitor = sub.add_parser("monitor", help="offline monitor report (PSI, calibration, coverage) with plots")
    monitor.add_argument("baseline", nargs="?", help="baseline table (.csv or .parquet)")
    monitor.add_argument("current", nargs="?", help="current window table (.csv or .parquet)")
    monitor.add_argument("--out", default="reports/monitor", help="directory for plots and report.txt")
    monitor.add_argument("--demo", action="store_true", help="use synthetic drifted data instead of files")
    monitor.set_defaults(func=cmd_monitor, monitor_parser=monitor)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "feed" and args.limit < 1:
        print("--limit: must be >= 1", file=sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
