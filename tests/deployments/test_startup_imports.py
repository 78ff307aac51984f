"""A replacement replica starts as fast as its imports allow: the deployments that neither score
nor search embeddings must not pull in torch or FAISS (≈ 3 s of a restart on this machine)."""
from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["deployments.ingress", "deployments.reranking", "deployments.auction"])
def test_light_deployments_import_neither_torch_nor_faiss(module: str) -> None:
    probe = f"import sys, {module}; print(sorted(m for m in ('torch', 'faiss') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()}"
