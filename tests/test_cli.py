"""CLI wiring: training on demand keeps the user's configuration."""
from __future__ import annotations

import sys

import cli.main as cli
from config import load_config


def test_training_on_demand_uses_the_given_configuration(tmp_path, monkeypatch):
    path = tmp_path / "rayfeed.yaml"
    path.write_text(f"artifacts:\n  root: {tmp_path / 'my-artifacts'}\n")
    trained_with = []
    monkeypatch.setattr(cli, "train", lambda config, no_ray: trained_with.append(config) or 0)
    cli._ensure_artifacts(load_config(path), no_ray=True)
    assert [c.artifacts.root for c in trained_with] == [str(tmp_path / "my-artifacts")]


def test_the_main_commands_local_redis_keeps_acknowledged_writes_across_a_crash(tmp_path, monkeypatch):
    """`rayfeed serve`'s own redis-server has an AOF fsynced per write: SIGKILL loses nothing."""
    import os
    import signal

    import redis

    from cli import serve_commands

    monkeypatch.setattr(serve_commands, "STATE_DIR", tmp_path)
    first = serve_commands._start_daemon_redis()
    try:
        redis.Redis.from_url(first["redis_url"]).xadd("rf:test:events", {"event_id": "e1"})
    finally:
        os.kill(first["redis_pid"], signal.SIGKILL)
        os.waitpid(first["redis_pid"], 0)
    second = serve_commands._start_daemon_redis()  # same directory, so the same AOF
    try:
        entries = redis.Redis.from_url(second["redis_url"]).xrange("rf:test:events")
        assert [fields[b"event_id"] for _, fields in entries] == [b"e1"]
    finally:
        os.kill(second["redis_pid"], signal.SIGTERM)
        os.waitpid(second["redis_pid"], 0)


def test_serve_environment_applies_the_throughput_defaults_unless_the_operator_set_one():
    from cli.serve_commands import THROUGHPUT_ENV, serve_environment

    defaults = serve_environment("redis://127.0.0.1:1/0", base={})
    assert all(defaults[name] == value for name, value in THROUGHPUT_ENV.items())
    assert defaults["REDIS_URL"] == "redis://127.0.0.1:1/0" and defaults["RAY_AUTH_MODE"] == "token"

    chosen = serve_environment("redis://127.0.0.1:1/0", base={"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1"})
    assert chosen["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    assert chosen["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == THROUGHPUT_ENV["RAY_SERVE_THROUGHPUT_OPTIMIZED"]


def test_haproxy_asked_for_without_its_binary_is_refused_by_name(monkeypatch, tmp_path):
    import argparse

    import pytest

    from cli import serve_commands

    monkeypatch.setenv("RAY_SERVE_ENABLE_HA_PROXY", "1")
    monkeypatch.setattr(serve_commands, "haproxy_available", lambda: False)
    monkeypatch.setattr(serve_commands, "_ensure_redis", lambda state: "redis://127.0.0.1:1/0")
    monkeypatch.setattr(serve_commands, "_read_state", lambda: {})
    monkeypatch.setattr("cli.main._ensure_artifacts", lambda config, no_ray: None)
    args = argparse.Namespace(config=None, train_in_process=False)
    with pytest.raises(SystemExit, match="RAY_SERVE_ENABLE_HA_PROXY=1 needs the HAProxy binary"):
        serve_commands.cmd_serve(args)


def test_the_installed_packages_import_from_any_directory(tmp_path):
    """The `rayfeed` script and Ray's workers import the project from the installed packages,
    not from the checkout's working directory: every top-level package must be installed."""
    import subprocess

    probe = "import app, cli.main, config, deployments.graph, observability, training, tuning; print('ok')"
    result = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_every_benchmark_starts_through_the_rayfeed_script_from_any_directory(tmp_path):
    """`rayfeed bench NAME --help` from outside the checkout: each script finds the repository's
    packages by itself (`rayfeed bench overload` once could not import `benchmarks`)."""
    import os
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    rayfeed = os.path.join(os.path.dirname(sys.executable), "rayfeed")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def help_of(name: str) -> tuple[str, subprocess.CompletedProcess]:
        return name, subprocess.run([rayfeed, "bench", name, "--help"], cwd=tmp_path, env=env,
                                    capture_output=True, text=True, timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        failed = {name: (r.stdout + r.stderr)[-800:] for name, r in pool.map(help_of, sorted(cli.BENCHMARKS))
                  if r.returncode != 0 or "usage" not in r.stdout.lower()}
    assert not failed, failed
