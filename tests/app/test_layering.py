"""House rules the code must keep: app/ never imports Ray; app/ reads no environment."""
import ast
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_app_never_imports_ray():
    offenders = [str(p.relative_to(APP)) for p in APP.rglob("*.py") if "ray" in _imports(p)]
    assert offenders == []


def test_app_reads_no_environment_variables():
    """Configuration flows through app.config only (pydantic-settings reads RAYFEED_*)."""
    offenders = [
        str(p.relative_to(APP))
        for p in APP.rglob("*.py")
        if "os.environ" in p.read_text() or "os.getenv" in p.read_text()
    ]
    assert offenders == []
