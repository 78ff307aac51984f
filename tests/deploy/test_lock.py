"""constraints.txt: the environment CI tested, pinned, and the one Ray version everywhere.

The lock pins every distribution the project's requirements pull in at the installed version;
`make install` installs under it; and the Ray version of the lock is the one the KubeRay
manifest, the image and docs/cluster.md name.
"""
from __future__ import annotations

import re
from importlib import metadata

import pytest
import yaml
from packaging.markers import default_environment
from packaging.requirements import Requirement

from cli.cluster_commands import LOCK, MANIFEST, REPO, lock_text, pinned_versions

INSTALLED_EXTRAS = ("dev",)  # what `make install` installs: -e '.[dev]'


def lock() -> dict[str, str]:
    return pinned_versions((REPO / LOCK).read_text())


def normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def public(version: str) -> str:
    return version.split("+", 1)[0]


def test_the_ray_version_is_one_everywhere():
    ray = lock()["ray"]
    import ray as installed

    assert public(installed.__version__) == ray, "the lock is not this environment: make lock"
    manifest_text = (REPO / MANIFEST).read_text()
    manifest = yaml.safe_load(manifest_text)
    assert manifest["spec"]["rayClusterConfig"]["rayVersion"] == ray
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    docs = (REPO / "docs" / "cluster.md").read_text()
    named = {
        MANIFEST: re.findall(r"ray(\d+\.\d+\.\d+)", manifest_text),  # the image tag
        "deploy/Dockerfile": re.findall(r"rayproject/ray:(\d+\.\d+\.\d+)", dockerfile),
        "docs/cluster.md": re.findall(r"\b[Rr]ay[ =:]=?(\d+\.\d+\.\d+)", docs),
    }
    for where, versions in named.items():
        assert versions and set(versions) == {ray}, f"{where} names Ray {sorted(set(versions))}, the lock {ray}"


def requirement_closure() -> dict[str, str]:
    """name -> installed version for everything rayfeed[dev] requires, transitively (markers honoured)."""
    found: dict[str, str] = {}
    todo = [(req, frozenset(INSTALLED_EXTRAS)) for req in map(Requirement, metadata.requires("rayfeed") or [])]
    while todo:
        req, extras = todo.pop()
        env = default_environment()
        if req.marker and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
            continue
        name = normal(req.name)
        if name in found:
            continue
        dist = metadata.distribution(req.name)
        found[name] = dist.version
        todo += [(Requirement(r), frozenset(req.extras)) for r in dist.requires or []]
    return found


def test_the_lock_pins_every_dependency_at_the_installed_version():
    pins = lock()
    closure = requirement_closure()
    assert {"ray", "torch", "faiss-cpu", "redis", "pytest"} <= closure.keys()
    missing = sorted(name for name in closure if name not in pins)
    differs = sorted(f"{n} {pins[n]} != installed {closure[n]}" for n in closure
                     if n in pins and pins[n] != public(closure[n]))
    assert not missing and not differs, f"run `make lock`: unpinned {missing}; {differs}"
    assert pins["torch"] == "2.13.0"  # the Makefile's torch pin, without the wheel's +cpu label


def test_make_install_installs_under_the_lock():
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^LOCK\s*:=\s*constraints\.txt$", makefile, re.M)
    assert re.search(r"^\$\(STAMP\):.*\$\(LOCK\)", makefile, re.M), "the stamp must depend on the lock"
    recipe = makefile.split("$(STAMP):", 1)[1].split("\n\n", 1)[0]
    installs = [line for line in recipe.splitlines() if "pip install" in line]
    assert installs and all("-c $(LOCK)" in line for line in installs)
    assert any("torch==2.13.0" in line for line in installs) and any("-e '.[dev]'" in line for line in installs)


def test_lock_text_pins_the_public_version_and_refuses_what_it_cannot_pin():
    text = lock_text(["# comment", "torch==2.13.0+cpu", "Ray==2.60.0", "aiohttp==3.14.5", ""])
    body = [line for line in text.splitlines() if not line.startswith("#")]
    assert body == ["aiohttp==3.14.5", "Ray==2.60.0", "torch==2.13.0"]
    assert pinned_versions(text) == {"aiohttp": "3.14.5", "ray": "2.60.0", "torch": "2.13.0"}
    for unpinnable in ("-e /work/main", "thing @ file:///tmp/thing.whl"):
        with pytest.raises(SystemExit, match="cannot pin"):
            lock_text([unpinnable])
