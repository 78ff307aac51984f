"""`rayfeed retrain`: the fine-tune job runner (monitor triggers or a schedule → gate → hot swap).

    rayfeed retrain --watch                 # serve retrain requests from rf:retrain:requests forever
    rayfeed retrain --once --reason manual  # one fine-tune job now (ignores the rate limit)

Needs REDIS_URL (requests and events live there) and the admin token of the serving app
(`api.admin_token_env`, default RAYFEED_ADMIN_TOKEN) to hot-swap a version that passed the gate.
"""
from __future__ import annotations

import argparse
import os
import sys


def cmd_retrain(args: argparse.Namespace) -> int:
    import logging

    from config import ConfigError, load_config
    from app.api.responses import load_admin_token
    from observability.monitors import MonitorResult, RetrainRequest, Severity
    from training.retrain_runner import RetrainRunner, http_reload

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    token = load_admin_token(os.environ, config.api.admin_token_env, config.api.admin_token_file)
    if not config.redis_url or not token:
        print("error: needs REDIS_URL and the admin token (environment variable "
              f"{config.api.admin_token_env} or api.admin_token_file)", file=sys.stderr)
        return 2
    runner = RetrainRunner(config, http_reload(args.url, token), use_ray=not args.no_ray)
    if args.once:
        import asyncio
        import time

        from app.state._redis import async_fail_fast_client
        from observability.retrain_requests import RetrainRequestStream
        from training.retrain_runner import LAST_JOB_KEY

        async def request() -> None:
            client = async_fail_fast_client(config.redis_url, 5.0, max_connections=2)  # one server or a cluster
            reason = MonitorResult("manual", args.reason, 1.0, Severity.CRITICAL, 0.0, 0.0)
            await RetrainRequestStream(client).append(RetrainRequest(time.time(), (reason,)))
            await client.delete(LAST_JOB_KEY)  # an operator's request is not rate-limited
            await client.aclose()

        asyncio.run(request())
        record = runner.step()
        print(record)
        return 0 if record is not None and record.status == "published" else 1
    runner.watch(args.poll_s)
    return 0


def register(subparsers) -> None:
    retrain = subparsers.add_parser("retrain", help="fine-tune on recent events when a monitor asks; gate; hot swap")
    mode = retrain.add_mutually_exclusive_group()
    mode.add_argument("--watch", action="store_true", help="run forever, polling for retrain requests (default)")
    mode.add_argument("--once", action="store_true", help="one job now, with --reason")
    retrain.add_argument("--reason", default="manual", help="why (--once)")
    retrain.add_argument("--url", default="http://127.0.0.1:8000", help="the serving app (admin API)")
    retrain.add_argument("--poll-s", type=float, default=5.0, help="seconds between polls when idle")
    retrain.add_argument("--no-ray", action="store_true", help="train in this process instead of Ray Train")
    retrain.set_defaults(func=cmd_retrain)
