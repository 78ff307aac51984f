"""One Ray instance, one deployed rayfeed app and one set of trained artifacts per test session.

The app is deployed from serve_config.yaml through Serve's config path (what `serve deploy`
does), with the artifact root pointed at a temporary directory and every deployment at one
replica, so a user_config change is an in-place reconfigure exactly as in production.

Tracing is on as an operator would turn it on: the application's `runtime_env.env_vars` carry
the standard OTel variables, pointing every replica's exporter at an in-test OTLP/HTTP receiver
(`otlp_receiver`), sampling every trace and flushing batches every 100 ms.
"""
from __future__ import annotations

import copy
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from app.artifacts import ArtifactVersion
from app.state.local_redis import free_port
from tests.integration.artifacts import REPO, train_two_versions
from tests.integration.otlp_receiver import OtlpReceiver

ADMIN_TOKEN = "integration-admin-token"
PRODUCER_TOKEN = "integration-producer-token"
DEPLOY_TIMEOUT_S = 300.0


@dataclass
class ServedApp:
    url: str
    first: ArtifactVersion
    second: ArtifactVersion
    config: dict  # the deployed ServeDeploySchema mapping
    redis_url: str
    otlp: OtlpReceiver

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30.0)

    def deploy(self, config: dict) -> None:
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        from ray.serve.schema import ApplicationStatus

        client = _get_global_client()
        # Not Serve's own blocking wait: it gives up after a fixed 60 s, which seven replicas
        # starting on two busy cores can exceed.
        client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)
        deadline = time.monotonic() + DEPLOY_TIMEOUT_S
        while True:
            statuses = {s.name: s.app_status.status for s in client.list_serve_statuses()}
            if statuses.get("rayfeed") == ApplicationStatus.RUNNING:
                break
            if statuses.get("rayfeed") == ApplicationStatus.DEPLOY_FAILED or time.monotonic() > deadline:
                raise TimeoutError(f"rayfeed not running after {DEPLOY_TIMEOUT_S}s: {statuses}")
            time.sleep(0.5)
        self.config = config


def concurrent_feeds(app: ServedApp, n: int, first_user: int) -> list[httpx.Response]:
    """`n` feeds sent at once, one client each (users first_user, first_user + 1, ...)."""
    out: list[httpx.Response] = []

    def one(i: int) -> None:
        with app.client() as c:
            out.append(c.get("/v1/feed", params={"user_id": first_user + i, "limit": 10}))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def tracing_env(otlp_endpoint: str) -> dict[str, str]:
    """The standard OTel variables a deployment needs to export every span to `otlp_endpoint`."""
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms; the SDK default (5 s) would only slow the tests
        "OTEL_SERVICE_NAME": "rayfeed-integration",
    }


def app_config(artifact_root: Path, version: str, port: int, otlp_endpoint: str | None = None) -> dict:
    config = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    if otlp_endpoint:
        config["applications"][0]["runtime_env"] = {"env_vars": tracing_env(otlp_endpoint)}
    for deployment in config["applications"][0]["deployments"]:
        deployment.pop("autoscaling_config", None)
        deployment["num_replicas"] = 1
        deployment["ray_actor_options"] = {"num_cpus": 0.1}
        settings = copy.deepcopy(deployment["user_config"])
        settings["admin_poll_s"] = 0.2
        settings["rayfeed"]["artifacts"] = {"root": str(artifact_root), "version": version}
        settings["rayfeed"]["data"] = {"cache_dir": str(REPO / "data_cache")}
        # The live monitor is off for the session: its Monitor would add to the calibration series
        # other tests count. tests/integration/test_live_monitor.py turns it on for itself.
        settings["rayfeed"].setdefault("observability", {}).setdefault("live_monitor", {})["enabled"] = False
        # Fixed in-flight bound for the session: an adaptive one would shed other tests' concurrent
        # feeds whenever the shared CI box is slow. test_reliability.py turns it on for itself.
        settings["rayfeed"].setdefault("api", {})["admission_target_s"] = 0
        deployment["user_config"] = settings
    return config


def wait_ready(url: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not ready within {timeout_s}s")


@pytest.fixture(scope="session")
def otlp_receiver():
    with OtlpReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="session")
def trained_versions(tmp_path_factory) -> tuple[Path, ArtifactVersion, ArtifactVersion]:
    """The session's artifact root and its two versions (trained once)."""
    root = tmp_path_factory.mktemp("artifacts")
    return (root, *train_two_versions(root))


@pytest.fixture(scope="session")
def served_app(redis_url, trained_versions, otlp_receiver) -> ServedApp:
    import ray
    from ray import serve

    root, first, second = trained_versions
    # A database of its own: the unit tests' redis_client fixture flushes db 0.
    url = redis_url.rsplit("/", 1)[0] + "/5"
    # Replicas inherit the driver's environment (ray.init starts the local cluster), and run as
    # `make run`'s do: Serve's throughput options, niceness 0 (cli/serve_commands.py).
    from cli.serve_commands import missing_throughput_env

    throughput = missing_throughput_env(os.environ)
    os.environ.update(throughput)
    os.environ["REDIS_URL"] = url
    os.environ["RAYFEED_ADMIN_TOKEN"] = ADMIN_TOKEN
    os.environ["RAYFEED_PRODUCER_TOKEN"] = PRODUCER_TOKEN
    import redis

    redis.Redis.from_url(url).flushdb()
    # address="local": always a fresh cluster of our own, never another user's running one.
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="rayfeed-integration",
             log_to_driver=False,
             _system_config={"metrics_report_interval_ms": 1000})  # scrapes see new values within ~1 s, not 10 s
    # Only for this cluster: a later test's own driver script under these options could not call
    # a handle from sync code (Serve's router then needs a running event loop).
    for name in throughput:
        del os.environ[name]
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    app = ServedApp(f"http://127.0.0.1:{port}", first, second, {}, url, otlp_receiver)
    try:
        app.deploy(app_config(root, first.version, port, otlp_receiver.endpoint))
        wait_ready(app.url)
        yield app
    finally:
        serve.shutdown()
        ray.shutdown()
        os.environ.pop("RAYFEED_ADMIN_TOKEN", None)
        os.environ.pop("RAYFEED_PRODUCER_TOKEN", None)
        os.environ.pop("REDIS_URL", None)
