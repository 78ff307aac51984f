"""Security defaults that must hold without anyone remembering them: everything listens on
loopback, the admin token never comes from the repository, the admin API is closed without one."""
from __future__ import annotations

import inspect
import subprocess
from pathlib import Path

import yaml

from app.api.config import ApiConfig
from app.api.responses import bearer_token_matches
from app.state.local_redis import LocalRedis

ROOT = Path(__file__).resolve().parents[1]


def test_http_redis_and_ray_bind_to_loopback_by_default():
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    assert config["http_options"]["host"] == "127.0.0.1"
    assert '"--bind", "127.0.0.1"' in inspect.getsource(LocalRedis.start)
    assert '"--protected-mode", "yes"' in inspect.getsource(LocalRedis.start)
    from cli import serve_commands

    assert serve_commands.DASHBOARD_HOST == "127.0.0.1"
    head = inspect.getsource(serve_commands._start_ray_head)
    assert "--node-ip-address=127.0.0.1" in head
    assert "--bind" in inspect.getsource(serve_commands._start_daemon_redis)


def test_the_admin_token_has_no_default_and_no_value_in_config():
    fields = ApiConfig.model_fields
    assert "admin_token" not in fields  # only where to read it: an environment variable or a file
    assert fields["admin_token_file"].default is None
    assert not bearer_token_matches("Bearer anything", None)
    assert not bearer_token_matches(None, "secret")
    assert not bearer_token_matches("Basic secret", "secret")
    assert bearer_token_matches("Bearer secret", "secret")


def test_no_tracked_file_outside_the_tests_sets_an_admin_token():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in tracked:
        if name.startswith("tests/") or not name.endswith((".py", ".yaml", ".yml", ".toml", ".env", ".cfg", ".json")):
            continue
        text = (ROOT / name).read_text(errors="replace")
        for line in text.splitlines():
            if "RAYFEED_ADMIN_TOKEN=" in line.replace(" ", "") and "$(" not in line and "environ" not in line:
                offenders.append(f"{name}: {line.strip()}")
    assert offenders == []
