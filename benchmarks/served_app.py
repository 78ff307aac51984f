"""What the served-app benchmarks share: a private copy of the artifacts, the app config from
serve_config.yaml (one replica per deployment, as the integration tests deploy it), a patient
deploy, and starting / stopping a private Ray + Serve.

Used by benchmarks/live_monitor_overhead.py and benchmarks/freshness_delay.py.
"""
from __future__ import annotations

import copy
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


def app_config(artifact_root: Path, version: str, port: int, rayfeed: dict | None = None) -> dict:
    """serve_config.yaml at one replica per deployment over `artifact_root`, with `rayfeed`
    merged into every deployment's configuration."""
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    for deployment in config["applications"][0]["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
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
    """A private local Ray (2 CPUs) with Serve on a free loopback port: (URL, port)."""
    import ray
    from ray import serve

    from app.state.local_redis import free_port

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
