"""A rayfeed app on a three-node Ray cluster on this machine, with no shared disk: run by
test_multi_node.py in a process of its own (its own cluster beside the session's).

    python -m tests.integration.multi_node --uri file:///.../artifacts --first V1 --second V2 --redis URL

Nodes: a head (the Serve controller, the HTTP proxy, every deployment but two) and two workers,
each started from a working directory of its own that holds no artifacts, each with its own
artifact and data cache directories (its replicas inherit them from the node's environment).
Retrieval and Ranking are forced onto the workers by a custom resource. Artifacts come from the
`file://` URI only. Steps, each timed, with the figures printed as one JSON line (`RESULT {...}`):

1. a deploy naming a mistyped artifact URI: the error Serve reports names the URI;
2. the real deploy: a feed over HTTP; which node holds which replica; the workers' caches;
3. a rolling `serve deploy` (new artifact version and collator alpha) under load;
4. a reconfigure to a missing version under load: the old version keeps serving, the error is kept;
5. the loss of the worker holding Ranking (its processes killed): how long until the app serves
   from the remaining nodes again, and how many requests failed meanwhile.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx

from app.state.local_redis import free_port
from tests.integration.conftest import ADMIN_TOKEN, PRODUCER_TOKEN, app_config

WORKER_RESOURCE = "rayfeed_worker"
HEAD_RESOURCE = "rayfeed_head"
ON_WORKERS = ("Retrieval", "Ranking")
APP = "rayfeed"


class Load:
    """Two closed-loop clients asking for feeds; every status (or -1) with its time and version."""

    def __init__(self, url: str) -> None:
        self.url, self.results, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(2)]

    def _run(self, i: int) -> None:
        with httpx.Client(base_url=self.url, timeout=15.0) as client:
            user = 1 + 400 * i
            while not self.stop.is_set():
                try:
                    response = client.get("/v1/feed", params={"user_id": user % 943 + 1, "limit": 10})
                    version = response.json().get("model_version") if response.status_code == 200 else None
                    self.results.append((time.monotonic(), response.status_code, version))
                except httpx.HTTPError:
                    self.results.append((time.monotonic(), -1, None))
                user += 1
                time.sleep(0.05)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join()

    def failed(self, since: float = 0.0) -> int:
        return sum(1 for at, status, _ in self.results if at >= since and status != 200)

    def sent(self, since: float = 0.0) -> int:
        return sum(1 for at, _, _ in self.results if at >= since)


def deploy(config: dict, wait_s: float = 300.0) -> float:
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ApplicationStatus, ServeDeploySchema

    client, started = _get_global_client(), time.monotonic()
    client.deploy_apps(ServeDeploySchema.model_validate(config), _blocking=False)
    time.sleep(1.0)
    while time.monotonic() - started < wait_s:
        statuses = {s.name: s.app_status for s in client.list_serve_statuses()}
        status = statuses.get(APP)
        if status is not None and status.status == ApplicationStatus.RUNNING:
            return time.monotonic() - started
        if status is not None and status.status == ApplicationStatus.DEPLOY_FAILED:
            raise RuntimeError(f"deploy failed: {status.message}")
        time.sleep(0.5)
    raise TimeoutError(f"{APP} not running after {wait_s}s")


def deployment_messages() -> str:
    from ray import serve

    app = serve.status().applications.get(APP)
    if app is None:
        return ""
    return " | ".join([app.message or ""] + [d.message or "" for d in app.deployments.values()])


def replica_nodes() -> dict[str, list[str]]:
    """Deployment -> node ids of its live replicas (from the GCS actor table)."""
    import ray

    out: dict[str, list[str]] = {}
    for actor in ray._private.state.actors().values():
        name = actor.get("ActorClassName", "")
        if actor.get("State") == "ALIVE" and name.startswith(f"ServeReplica:{APP}:"):
            out.setdefault(name.rsplit(":", 1)[1], []).append(actor["Address"]["NodeID"])
    return out


def replica_handle_call(deployment: str, method: str):
    from ray import serve

    return serve.get_deployment_handle(deployment, APP).options(method_name=method).remote().result(timeout_s=60)


def cached_versions(cache: Path) -> list[str]:
    """Versions in a node's artifact cache (<cache>/<root hash>/<version>/manifest.json)."""
    return sorted(p.parent.name for p in cache.glob("*/*/manifest.json"))


def first_feed(url: str, wait_s: float = 120.0) -> dict:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            response = httpx.get(f"{url}/v1/feed", params={"user_id": 42, "limit": 10}, timeout=15)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"no feed from {url} within {wait_s}s")


def cluster_config(uri: str, version: str, port: int) -> dict:
    config = app_config(Path("unused"), version, port)
    config["proxy_location"] = "HeadOnly"
    for deployment in config["applications"][0]["deployments"]:
        settings = deployment["user_config"]
        settings["rayfeed"]["artifacts"] = {"root": uri, "version": version}
        settings["rayfeed"].pop("data", None)  # each node's own cache (its environment)
        where = WORKER_RESOURCE if deployment["name"] in ON_WORKERS else HEAD_RESOURCE
        deployment["ray_actor_options"] = {"num_cpus": 0.1, "resources": {where: 0.01}}
    return config


def run(uri: str, first: str, second: str, redis_url: str) -> dict:
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    result: dict = {}
    base = Path(tempfile.mkdtemp(prefix="rayfeed-multinode-"))
    os.environ.update({"REDIS_URL": redis_url, "RAYFEED_ADMIN_TOKEN": ADMIN_TOKEN,
                       "RAYFEED_PRODUCER_TOKEN": PRODUCER_TOKEN, "OMP_NUM_THREADS": "1"})

    def node_env(name: str) -> dict[str, str]:
        home = base / name
        (home / "cwd").mkdir(parents=True)
        return {"RAYFEED_ARTIFACTS__CACHE_DIR": str(home / "artifact-cache"),
                "RAYFEED_DATA__CACHE_DIR": str(home / "data-cache")}

    repo_cwd = os.getcwd()
    started = time.monotonic()
    os.chdir(base)
    os.makedirs(base / "head" / "cwd")
    os.chdir(base / "head" / "cwd")
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "resources": {HEAD_RESOURCE: 1},
        "env_vars": {"RAYFEED_ARTIFACTS__CACHE_DIR": str(base / "head" / "artifact-cache"),
                     "RAYFEED_DATA__CACHE_DIR": str(base / "head" / "data-cache")},
        "include_dashboard": False,
        # Node loss noticed in ~3 s instead of Ray's default (≈ 30 s).
        "_system_config": {"health_check_initial_delay_ms": 0, "health_check_period_ms": 1000,
                           "health_check_failure_threshold": 3},
    })
    workers = {}
    for name in ("worker-a", "worker-b"):
        env = node_env(name)
        os.chdir(base / name / "cwd")  # the node's processes start here: no artifacts in it
        workers[name] = cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1}, env_vars=env)
    os.chdir(repo_cwd)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="rayfeed-multinode", log_to_driver=False)
    result["cluster_start_s"] = round(time.monotonic() - started, 1)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")

        # 1. a mistyped URI at start-up: the error Serve shows names it.
        mistyped = uri + "-typo"
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(cluster_config(mistyped, first, port)),
                                         _blocking=False)
        deadline, message = time.monotonic() + 120, ""
        while time.monotonic() < deadline and mistyped not in message:
            time.sleep(1.0)
            message = deployment_messages()
        result["startup_error_names_uri"] = mistyped in message
        result["startup_error"] = next((line for line in message.splitlines() if mistyped in line), message[-400:])

        # 2. the real deploy.
        result["deploy_s"] = round(deploy(cluster_config(uri, first, port)), 1)
        feed = first_feed(url)
        result["feed_items"] = len(feed["items"])
        result["feed_version"] = feed["model_version"]
        nodes = {name: node.node_id for name, node in workers.items()}
        placed = replica_nodes()
        result["placement"] = {d: sorted(next((n for n, i in nodes.items() if i == node), "head") for node in ids)
                               for d, ids in placed.items()}
        result["worker_cwds_hold_artifacts"] = any((base / n / "cwd" / "artifacts").exists() for n in nodes)
        result["worker_caches"] = {n: cached_versions(base / n / "artifact-cache") for n in nodes}

        # 3. a rolling serve deploy with a changed user_config under load: no failed request.
        config = cluster_config(uri, second, port)
        for deployment in config["applications"][0]["deployments"]:
            deployment["user_config"]["rayfeed"]["collator"]["alpha"] = 1.2
        with Load(url) as load:
            time.sleep(2.0)
            rolled_at = time.monotonic()
            result["rolling_deploy_s"] = round(deploy(config), 1)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(v == second for _, _, v in load.results[-3:]):
                time.sleep(0.2)
            time.sleep(2.0)
        result["rolling"] = {"sent": load.sent(), "failed": load.failed(),
                             "served_second": any(v == second for _, _, v in load.results),
                             "since_roll_sent": load.sent(rolled_at)}

        # 4. a reconfigure to a version missing from the URI: the old version keeps serving.
        missing = copy.deepcopy(config)
        for deployment in missing["applications"][0]["deployments"]:
            deployment["user_config"]["rayfeed"]["artifacts"]["version"] = "v-missing"
        with Load(url) as load:
            deploy(missing)
            time.sleep(3.0)
        errors = {d: replica_handle_call(d, "reload_error") for d in ON_WORKERS}
        result["missing_version"] = {"sent": load.sent(), "failed": load.failed(),
                                     "versions_served": sorted({v for _, s, v in load.results if s == 200}),
                                     "errors": errors}
        deploy(config)  # back to the good one

        # 5. the loss of the worker holding Ranking.
        placed = replica_nodes()
        victim = next(n for n, node in workers.items() if node.node_id in placed.get("Ranking", []))
        result["killed"] = victim
        with Load(url) as load:
            time.sleep(3.0)
            killed_at = time.monotonic()
            cluster.remove_node(workers[victim], allow_graceful=False)
            survivor = next(n for n in workers if n != victim)

            def moved() -> bool:
                now = replica_nodes()
                return all(now.get(d) and set(now[d]) <= {workers[survivor].node_id, cluster.head_node.node_id}
                           for d in ON_WORKERS)

            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not moved():
                time.sleep(0.5)
            replaced_s = time.monotonic() - killed_at
            # Serving again: the first of five successes in a row after the kill.
            serving_s = None
            while time.monotonic() < deadline and serving_s is None:
                after = [(at, s) for at, s, _ in load.results if at > killed_at]
                for k in range(len(after) - 4):
                    if all(s == 200 for _, s in after[k:k + 5]) and all(s == 200 for _, s in after[k:]):
                        serving_s = after[k][0] - killed_at
                        break
                time.sleep(0.5)
            time.sleep(3.0)
        result["node_loss"] = {
            "replaced_on_survivor_s": round(replaced_s, 1), "moved": moved(),
            "serving_again_s": None if serving_s is None else round(serving_s, 1),
            "sent": load.sent(killed_at), "failed": load.failed(killed_at),
            "failed_statuses": sorted({s for at, s, _ in load.results if at >= killed_at and s != 200}),
        }
        result["after_loss_feed_items"] = len(first_feed(url, 60)["items"])
        result["survivor_cache"] = cached_versions(base / survivor / "artifact-cache")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
            cluster.shutdown()
    result["total_s"] = round(time.monotonic() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uri", required=True)
    parser.add_argument("--first", required=True)
    parser.add_argument("--second", required=True)
    parser.add_argument("--redis", required=True)
    args = parser.parse_args()
    print("RESULT " + json.dumps(run(args.uri, args.first, args.second, args.redis)), flush=True)


if __name__ == "__main__":
    main()
