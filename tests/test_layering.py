"""The layers and what each may import, as one table; and the house rules that keep the served
feed and the in-process feed one code path (no stage lists or stage records under deployments/).

Every import counts, at any depth (a function-local import is still a dependency).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Where the rule applies (a package folder, or a sub-folder) -> the import prefixes it must not use.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # The domain: no Ray, no observability, nothing above it (config is the composition root).
    "app": ("ray", "observability", "deployments", "training", "tuning", "cli", "config", "benchmarks"),
    # The collator is a pure function of its inputs.
    "app/collator": ("redis", "app.state"),
    "observability": ("deployments", "training", "tuning", "cli", "config", "benchmarks"),
    "config": ("ray", "deployments", "tuning", "cli", "benchmarks"),
    "training": ("deployments", "cli", "benchmarks"),
    "tuning": ("deployments", "cli", "benchmarks"),
    "deployments": ("training", "tuning", "cli", "benchmarks"),
}

# Built only by the runner (app/pipeline): a deployment that declares a stage list or makes a
# stage's record, span or timing by hand runs a different pipeline from the in-process one.
RUNNER_ONLY = ("PipelineRunner", "StageRecord", "timed_step", "record_span", "batch_span", "continue_trace",
               "retrieval_pipeline", "ranking_pipeline", "reranking_pipeline")
INGRESS_MAX_LINES = 350


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def violations(files: dict[str, str]) -> list[str]:
    """`path: module` for every import a rule of FORBIDDEN forbids (files: repo path -> source)."""
    found = []
    for path, source in files.items():
        for scope, banned in FORBIDDEN.items():
            if not (path.startswith(scope + "/") or path == scope + ".py"):
                continue
            for module in imported_modules(source):
                if any(module == b or module.startswith(b + ".") for b in banned):
                    found.append(f"{path}: {module}")
    return sorted(found)


def sources(*scopes: str) -> dict[str, str]:
    return {str(p.relative_to(ROOT)): p.read_text() for scope in scopes for p in sorted((ROOT / scope).rglob("*.py"))}


def test_every_layer_imports_only_what_it_may():
    assert violations(sources(*{scope.split("/")[0] for scope in FORBIDDEN})) == []


@pytest.mark.parametrize("path, source", [
    ("app/organic.py", "from observability.metrics import ObservabilityHook"),
    ("app/feed.py", "def f():\n    import ray\n"),
    ("app/pipeline/runner.py", "from config import RayfeedConfig"),
    ("app/collator/rules.py", "from app.state.caps import CapStore"),
    ("observability/metrics.py", "import deployments.common"),
])
def test_the_table_catches_a_layer_running_back_up(path, source):
    assert violations({path: source}) == [f"{path}: {sorted(imported_modules(source))[0]}"]


def test_app_reads_no_environment_variables():
    """Configuration flows through the composition root only (pydantic-settings reads RAYFEED_*)."""
    offenders = [path for path, source in sources("app").items() if "os.environ" in source or "os.getenv" in source]
    assert offenders == []


def test_deployments_declare_no_stage_list_and_build_no_stage_record():
    offenders = []
    for path, source in sources("deployments").items():
        for node in ast.walk(ast.parse(source)):
            name = (node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else
                    node.func.attr if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) else None)
            if name in RUNNER_ONLY:
                offenders.append(f"{path}:{node.lineno} calls {name}")
    assert offenders == []


def test_the_ingress_stays_thin():
    lines = len((ROOT / "deployments" / "ingress.py").read_text().splitlines())
    assert lines <= INGRESS_MAX_LINES, f"deployments/ingress.py has {lines} lines (at most {INGRESS_MAX_LINES})"
