"""rayfeed on a three-node Ray cluster on this machine with no shared disk (multi_node.py runs
it in a process of its own): artifacts only from a file:// URI outside every working directory,
each node its own cache, Retrieval and Ranking on the workers; a feed, a rolling deploy under
load, a reconfigure to a missing version, and the loss of a worker node."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from app.artifacts import LATEST
from tests.integration.artifacts import REPO

pytestmark = pytest.mark.integration


def test_the_app_runs_on_a_cluster_without_a_shared_disk_and_survives_losing_a_worker(
        trained_versions, redis_url, tmp_path):
    root, first, second = trained_versions
    bucket = tmp_path / "bucket" / "rayfeed-artifacts"  # outside the repo and every node's directory
    for version in (first, second):
        shutil.copytree(version.path, bucket / version.version)
    (bucket / LATEST).write_text(second.version)
    url = redis_url.rsplit("/", 1)[0] + "/7"
    completed = subprocess.run(
        [sys.executable, "-m", "tests.integration.multi_node", "--uri", f"file://{bucket}",
         "--first", first.version, "--second", second.version, "--redis", url],
        cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": str(REPO)})
    line = next((l for l in completed.stdout.splitlines() if l.startswith("RESULT ")), None)
    assert line is not None, f"no result (rc {completed.returncode}): {completed.stderr[-4000:]}"
    result = json.loads(line[len("RESULT "):])
    print(json.dumps(result, indent=2))  # the figures docs/reliability.md records

    assert result["startup_error_names_uri"], result["startup_error"]
    assert result["feed_items"] == 10 and result["feed_version"] == first.version
    for deployment in ("Retrieval", "Ranking"):
        assert result["placement"][deployment] and "head" not in result["placement"][deployment]
    assert not result["worker_cwds_hold_artifacts"]
    for name, versions in result["worker_caches"].items():
        if name in result["placement"]["Retrieval"] + result["placement"]["Ranking"]:
            assert first.version in versions, (name, versions)
    assert result["rolling"]["failed"] == 0 and result["rolling"]["served_second"], result["rolling"]
    missing = result["missing_version"]
    assert missing["failed"] == 0 and missing["versions_served"] == [second.version], missing
    for error in missing["errors"].values():
        assert "v-missing" in error and f"file://{bucket}" in error, error
    loss = result["node_loss"]
    assert loss["moved"] and loss["serving_again_s"] is not None, loss
    assert result["after_loss_feed_items"] == 10
    assert second.version in result["survivor_cache"]
    assert set(loss["failed_statuses"]) <= {-1, 500, 502, 503, 504}, loss
