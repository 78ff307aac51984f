"""What the served-app benchmarks share: a private copy of the artifacts, the app config from
serve_config.yaml (one replica per deployment, as the integration tests deploy it), a patient
deploy, and starting / stopping a private Ray + Serve.

Used by benchmarks/live_monitor_overhead.py and benchmarks/freshness_delay.py.
"""
from __future__ import annotations

import copy
import os
import shutil
import time
from pathlib import Path

import yaml

from config import deep_merge

REPO = Path(__file__).resolve().parents[1]


def prepare_artifacts(root: Path, target: Path, log) -> str:
    """A copy of the latest version under `target`, with a monitor baseline; returns its version."""
    from app.artifacts import ArtifactStore
    from config import load_config
    from app.data import load_dataset
    from app.organic import OrganicModels
    from observability.live_monitor import BASELINE_FILE
    from training.monitor_baseline import save_monitor_baseline

    version = ArtifactStore(root).latest()
    shutil.copytree(version.path, target / version.version)
    (target / "LATEST").write_text(version.version)
    organic = target / version.version / "organic"
    if not (organic / BASELINE_FILE).exists():
        config = load_config(overrides={"artifacts": {"root": str(target)}, "data": {"cache_dir": str(REPO / "data_cache")}})
        models = OrganicModels.load(organic, load_dataset(config.data), config)
        started = time.perf_counter()
        save_monitor_baseline(models, config, organic)
        log(f"fitted a monitor baseline into the copy ({time.perf_counter() - started:.0f}s)")
    return version.version


def app_config(artifact_root: Path, version: str, port: int, rayfeed: dict | None = None,
               replicas: dict[str, int] | None = None) -> dict:
    """serve_config.yaml at one replica per deployment (or `replicas[name]`) over `artifact_root`,
    with `rayfeed` merged into every deployment's configuration."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    for deployment in config["applications"][0]["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = (replicas or {}).get(deployment["name"], 1)
        settings = copy.deepcopy(deployment["user_config"])
        settings["rayfeed"]["artifacts"] = {"root": str(artifact_root), "version": version}
        settings["rayfeed"]["data"] = {"cache_dir": str(REPO / "data_cache")}
        settings["rayfeed"] = deep_merge(settings["rayfeed"], rayfeed or {})
        deployment["user_config"] = settings
    return config


def deploy(config: dict, url: str, timeout_s: float = 600.0) -> None:
    """Deploy (or reconfigure in place) and wait until the app runs and answers /readyz. Serve's
    own blocking wait gives up after 60 s, too short for a first start on a loaded 2-core machine."""
    from ray import serve
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeDeploySchema

    try:
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config), _blocking=True)
    except TimeoutError:
        pass
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        app = serve.status().applications.get("rayfeed")
        if app is not None and str(app.status).endswith("RUNNING") and answers_ok(f"{url}/readyz"):
            return
        time.sleep(1.0)
    raise TimeoutError(f"the app was not ready within {timeout_s:.0f}s")


def answers_ok(url: str, params: dict | None = None) -> bool:
    """Whether a GET of `url` answers 200 (within 10 s)."""
    import httpx

    try:
        return httpx.get(url, params=params, timeout=10).status_code == 200
    except httpx.HTTPError:
        return False




def machine() -> str:
    """The machine a figure was taken on, load included (other work on it moves latencies)."""
    import os
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}"


def report(figures: dict, json_path: str | None) -> None:
    """Print the figures as JSON, and write them to `json_path` when given."""
    import json

    text = json.dumps(figures, indent=1)
    print(text)
    if json_path:
        Path(json_path).write_text(text)


def start_serve(namespace: str) -> tuple[str, int]:
    """A private local Ray (2 CPUs) with Serve on a free loopback port: (URL, port). Run with
    `rayfeed serve`'s environment (Serve's throughput options, replicas at niceness 0) unless
    the caller set those variables: a bench measures the app `make run` serves."""
    import ray
    from ray import serve

    from app.state.local_redis import free_port
    from cli.serve_commands import missing_throughput_env

    os.environ.update(missing_throughput_env(os.environ))  # workers inherit it from ray.init's raylet
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, namespace=namespace)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return f"http://127.0.0.1:{port}", port


def stop_all(redis_server, work: Path) -> None:
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()
        redis_server.stop()
        shutil.rmtree(work, ignore_errors=True)


def process_memory() -> list[dict]:
    """Proportional and resident set size (MiB) of every Ray process on this machine (replicas by
    their deployment, the proxy, the controller, raylet, GCS, ...) and redis-server, from /proc.
    PSS divides a page shared by n processes by n: mapped artifact files count once in the sum."""
    rows = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            rollup = (proc / "smaps_rollup").read_text()
        except OSError:
            continue
        name = _ray_process_name(cmdline)
        if name is None:
            continue
        fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup.splitlines()[1:] if line.endswith("kB")}
        rows.append({"pid": int(proc.name), "process": name, "pss_mib": fields.get("Pss", 0) / 1024,
                     "rss_mib": fields.get("Rss", 0) / 1024})
    return sorted(rows, key=lambda r: -r["pss_mib"])


def _ray_process_name(cmdline: str) -> str | None:
    """ray::<actor> for Ray workers (Serve replicas: ServeReplica:<app>:<deployment>), the binary
    for raylet / gcs_server / redis-server, the script for Ray's Python daemons; None otherwise."""
    parts = cmdline.split()
    if not parts:
        return None
    if parts[0].startswith("ray::"):
        return parts[0].removeprefix("ray::")
    binary = Path(parts[0]).name
    if binary in ("raylet", "gcs_server", "redis-server"):
        return binary
    script = next((p for p in parts[1:] if p.endswith(".py")), "")
    if "/ray/" in script:
        return "ray " + "/".join(Path(script).parts[-2:])
    return None


def print_process_memory(rows: list[dict], log=print) -> float:
    """The table, and the total PSS in GiB."""
    log(f"  {'process':<48} {'PSS MiB':>9} {'RSS MiB':>9}")
    for r in rows:
        log(f"  {r['process'][:48]:<48} {r['pss_mib']:9.0f} {r['rss_mib']:9.0f}")
    total = sum(r["pss_mib"] for r in rows) / 1024
    log(f"  total PSS {total:.2f} GiB over {len(rows)} processes")
    return total
