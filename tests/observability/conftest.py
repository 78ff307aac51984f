"""Fixtures for observability tests: a promtool binary (found, cached or extracted)."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GET_PROMTOOL = ROOT / "observability" / "alerts" / "get_promtool.sh"


@pytest.fixture(scope="session")
def promtool() -> str:
    """PROMTOOL, promtool on PATH, or Debian's package unpacked into data_cache/promtool."""
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to obtain promtool")
    result = subprocess.run(
        ["bash", str(GET_PROMTOOL), str(ROOT / "data_cache" / "promtool")],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=dict(os.environ),
    )
    if result.returncode != 0:
        pytest.skip(f"promtool cannot be obtained here: {result.stderr.strip()}")
    return result.stdout.strip().splitlines()[-1]
