"""deploy/kuberay/rayservice.yaml: its serveConfigV2 is serve_config.yaml, regenerated, never edited.

A change to serve_config.yaml without `make kuberay` fails here; the generated config passes Serve's
schema; the pods carry the environment the code reads (Redis, tokens from Secrets, the OTLP
collector, the artifact URI) and that environment does set the served configuration.
"""
from __future__ import annotations

import copy
import shutil
from pathlib import Path

import yaml
from ray.serve.schema import ServeDeploySchema

from cli.cluster_commands import (
    KUBERAY_HTTP_HOST, KUBERAY_PROXY_LOCATION, MANIFEST, REPO, SERVE_CONFIG, kuberay_serve_config,
    manifest_serve_config, read_serve_config, render_manifest,
)
from cli.main import main
from cli.serve_commands import THROUGHPUT_ENV
from config import RayfeedConfig, config_from_mapping

SECRET_ENV = ("REDIS_URL", "RAYFEED_ADMIN_TOKEN", "RAYFEED_PRODUCER_TOKEN")


def manifest_text(repo: Path = REPO) -> str:
    return (repo / MANIFEST).read_text()


def test_the_manifest_is_serve_config_regenerated():
    current = manifest_text()
    assert render_manifest(current, kuberay_serve_config(read_serve_config())) == current, (
        f"{MANIFEST} has drifted from {SERVE_CONFIG}: run `make kuberay` and commit the result")


def test_serve_accepts_the_generated_config():
    ServeDeploySchema.model_validate(manifest_serve_config(manifest_text()))


def test_the_only_differences_are_the_declared_ones():
    """Put back what the generator changes: what is left is serve_config.yaml, key for key."""
    served = manifest_serve_config(manifest_text())
    assert served["http_options"]["host"] == KUBERAY_HTTP_HOST and served["proxy_location"] == KUBERAY_PROXY_LOCATION
    restored = copy.deepcopy(served)
    source = read_serve_config()
    restored["http_options"]["host"] = source["http_options"]["host"]
    restored["proxy_location"] = source["proxy_location"]
    for ours, theirs in zip(restored["applications"][0]["deployments"], source["applications"][0]["deployments"]):
        assert "root" not in ours["user_config"]["rayfeed"]["artifacts"]  # the pods' env sets it
        ours["user_config"]["rayfeed"]["artifacts"]["root"] = theirs["user_config"]["rayfeed"]["artifacts"]["root"]
    assert restored == source


def test_a_changed_serve_config_is_caught_and_regenerated(tmp_path, capsys):
    for name in (SERVE_CONFIG, MANIFEST, "pyproject.toml"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, tmp_path / name)
    config = (tmp_path / SERVE_CONFIG).read_text()
    assert "max_batch_size: 8" in config
    (tmp_path / SERVE_CONFIG).write_text(config.replace("max_batch_size: 8", "max_batch_size: 16"))
    before = manifest_text(tmp_path)

    assert main(["kuberay", "--check", "--repo", str(tmp_path)]) == 1
    assert "make kuberay" in capsys.readouterr().err
    assert manifest_text(tmp_path) == before  # --check writes nothing

    assert main(["kuberay", "--repo", str(tmp_path)]) == 0
    after = manifest_text(tmp_path)
    ranking = {d["name"]: d for d in manifest_serve_config(after)["applications"][0]["deployments"]}["Ranking"]
    assert ranking["user_config"]["max_batch_size"] == 16
    outside = [line for line in before.splitlines() if not line.startswith("    ")]
    assert [line for line in after.splitlines() if not line.startswith("    ")] == outside  # hand-edited part kept
    assert main(["kuberay", "--check", "--repo", str(tmp_path)]) == 0


def containers(manifest: dict) -> list[dict]:
    cluster = manifest["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_a_head_and_a_worker_group_on_the_rayservice_v1_api():
    manifest = yaml.safe_load(manifest_text())
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    cluster = manifest["spec"]["rayClusterConfig"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["name"] == "ray-head"
    assert len(cluster["workerGroupSpecs"]) >= 1 and cluster["workerGroupSpecs"][0]["replicas"] >= 1
    assert cluster["authOptions"] == {"mode": "token"}
    images = {c["image"] for c in containers(manifest)}
    assert len(images) == 1 and next(iter(images)).startswith("rayfeed:")


def test_every_pod_gets_the_environment_the_code_reads(monkeypatch):
    manifest = yaml.safe_load(manifest_text())
    for container in containers(manifest):
        env = {e["name"]: e for e in container["env"]}
        for name in SECRET_ENV:  # from a Secret, never a literal in the manifest
            assert set(env[name]) == {"name", "valueFrom"} and "secretKeyRef" in env[name]["valueFrom"], name
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"].startswith("http")
        assert "://" in env["RAYFEED_ARTIFACTS__ROOT"]["value"]
        for name, value in {**THROUGHPUT_ENV, "OMP_NUM_THREADS": "1"}.items():  # as `rayfeed serve` runs Ray
            assert env[name]["value"] == value, name
    # the names are the ones the code reads
    assert "REDIS_URL" in RayfeedConfig.model_fields["redis_url"].validation_alias.choices
    api = config_from_mapping({}).api
    assert (api.admin_token_env, api.producer_token_env) == ("RAYFEED_ADMIN_TOKEN", "RAYFEED_PRODUCER_TOKEN")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" in (REPO / "observability" / "tracing.py").read_text()

    # and the artifact URI in the pods' env is what a replica's configuration ends up with
    env = {e["name"]: e.get("value") for e in containers(manifest)[-1]["env"]}
    monkeypatch.setenv("RAYFEED_ARTIFACTS__ROOT", env["RAYFEED_ARTIFACTS__ROOT"])
    for deployment in manifest_serve_config(manifest_text())["applications"][0]["deployments"]:
        config = config_from_mapping(deployment["user_config"]["rayfeed"], deployment["name"])
        assert str(config.artifacts.root) == env["RAYFEED_ARTIFACTS__ROOT"]
