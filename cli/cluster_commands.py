"""`rayfeed package | kuberay | lock`: the same code and the same environment on every node.

    rayfeed package [--out dist] [--base-uri s3://bucket/prefix] [--artifacts-root URI]
        zip the project's code (named by its content hash), put it under --base-uri (default:
        file:// of --out) and write a serve config whose runtime_env.working_dir is its URI
    rayfeed kuberay [--check]
        regenerate the serveConfigV2 of deploy/kuberay/rayservice.yaml from serve_config.yaml;
        --check exits 1 when the manifest has drifted
    rayfeed lock [--check]
        write constraints.txt from this environment (pip freeze); --check exits 1 when it differs

docs/cluster.md says when to use which.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import io
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
SERVE_CONFIG = "serve_config.yaml"
MANIFEST = "deploy/kuberay/rayservice.yaml"
LOCK = "constraints.txt"

# Beside the packages pyproject installs: what a replica reads from its working directory.
PACKAGE_FILES = ("pyproject.toml", SERVE_CONFIG, "configs")
# Never shipped, at any depth: environments, data, artifacts, caches, VCS metadata.
NEVER_PACKAGED = frozenset({".venv", "artifacts", "data_cache", "runs", "__pycache__", ".git", ".pytest_cache",
                            ".hypothesis", ".schemathesis", ".redis", "dist"})
NEVER_PACKAGED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
ZIP_TOP = "rayfeed"  # one top-level directory: Ray strips it when it unpacks a remote working_dir
ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same code gives the same bytes and name

# The cluster's differences from serve_config.yaml, each with its reason (docs/cluster.md).
KUBERAY_HTTP_HOST = "0.0.0.0"  # the Kubernetes Service reaches each pod's proxy on the pod IP
KUBERAY_PROXY_LOCATION = "EveryNode"  # every pod with a ready proxy takes traffic from the Service
# artifacts.root leaves user_config: the pods' RAYFEED_ARTIFACTS__ROOT (a storage URI) sets it.
GENERATED_NOTE = ("# GENERATED from serve_config.yaml by `rayfeed kuberay` (make kuberay): edit serve_config.yaml,\n"
                  "# then regenerate; tests/deploy/test_kuberay_manifest.py fails when the two differ.\n")


class _Expanded(yaml.SafeDumper):
    """Writes every YAML alias of serve_config.yaml out in full: each deployment reads alone."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(value: Any) -> str:
    return yaml.dump(value, Dumper=_Expanded, sort_keys=False, default_flow_style=None, width=100)


def read_serve_config(repo: Path = REPO) -> dict:
    path = repo / SERVE_CONFIG
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise SystemExit(f"{path}: {exc.strerror}; run this from a rayfeed checkout") from exc


def validate_serve_config(config: dict, source: str) -> None:
    """Serve's own schema (what `serve deploy` and the KubeRay operator submit), or SystemExit."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        raise SystemExit(f"{source}: Serve refuses this config: {exc}") from exc


def _deployment_settings(config: dict):
    """Each deployment's `rayfeed` section of user_config (the RayfeedConfig mapping)."""
    for app in config.get("applications", []):
        for deployment in app.get("deployments", []):
            settings = (deployment.get("user_config") or {}).get("rayfeed")
            if isinstance(settings, dict):
                yield settings


# ----------------------------------------------------------------------------------- package


@dataclass(frozen=True)
class CodePackage:
    name: str  # rayfeed-<content hash>.zip
    data: bytes
    files: tuple[str, ...]  # paths inside the zip, below ZIP_TOP

    @property
    def digest(self) -> str:
        return self.name.removeprefix("rayfeed-").removesuffix(".zip")


def package_roots(repo: Path = REPO) -> list[str]:
    """The packages pyproject installs (its setuptools `find` include patterns) and PACKAGE_FILES."""
    pyproject = tomllib.loads((repo / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = sorted({p.rstrip("*").rstrip(".") for p in patterns})
    return [*packages, *PACKAGE_FILES]


def _packaged(relative: PurePosixPath) -> bool:
    return not any(part in NEVER_PACKAGED or part.endswith(NEVER_PACKAGED_SUFFIXES) for part in relative.parts)


def _package_files(repo: Path) -> list[PurePosixPath]:
    files: list[PurePosixPath] = []
    for root in package_roots(repo):
        path = repo / root
        if path.is_file():
            files.append(PurePosixPath(root))
            continue
        if not path.is_dir():
            raise SystemExit(f"{path}: missing; the package needs it")
        for directory, dirnames, filenames in os.walk(path):
            here = PurePosixPath(Path(directory).relative_to(repo).as_posix())
            dirnames[:] = [d for d in dirnames if _packaged(here / d)]
            files += [here / f for f in filenames if _packaged(here / f)]
    return sorted(files)


def build_package(repo: Path = REPO) -> CodePackage:
    """A deterministic zip of the code: the same files give the same bytes, hence the same name.

    Ray caches a remote working_dir by its URI on every node, so new code must get a new URI;
    naming the zip by the hash of its bytes does that and lets an unchanged tree reuse the upload.
    """
    files = _package_files(repo)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for relative in files:
            source = repo / relative
            info = zipfile.ZipInfo(f"{ZIP_TOP}/{relative}", ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (0o755 if os.access(source, os.X_OK) else 0o644) << 16
            archive.writestr(info, source.read_bytes())
    data = buffer.getvalue()
    return CodePackage(f"rayfeed-{hashlib.sha256(data).hexdigest()[:16]}.zip", data, tuple(map(str, files)))


def publish_package(package: CodePackage, out: Path, base_uri: str | None) -> str:
    """Write the zip to `out`; copy it under `base_uri` when that is a pyarrow filesystem URI.

    Returns the zip's URI for runtime_env.working_dir. http(s) URIs are printed, not uploaded:
    the user puts the file where that URI serves it.
    """
    out.mkdir(parents=True, exist_ok=True)
    local = out / package.name
    local.write_bytes(package.data)
    if base_uri is None:
        return local.resolve().as_uri()
    uri = f"{base_uri.rstrip('/')}/{package.name}"
    if base_uri.startswith(("http://", "https://")):
        print(f"upload {local} so that {uri} serves it (Ray downloads it from there on every node)")
        return uri
    from pyarrow import fs

    filesystem, path = fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with filesystem.open_output_stream(path) as stream:
        stream.write(package.data)
    return uri


def packaged_serve_config(config: dict, working_dir: str, artifacts_root: str | None, repo: Path = REPO) -> dict:
    """serve_config.yaml with every application's code from `working_dir` (a zip URI).

    A replica runs in the unpacked zip, so a relative artifacts.root would be looked for there:
    it becomes `artifacts_root` when given, else the checkout's absolute path (one machine).
    """
    config = copy.deepcopy(config)
    for app in config["applications"]:
        app["runtime_env"] = {**(app.get("runtime_env") or {}), "working_dir": working_dir}
    for settings in _deployment_settings(config):
        artifacts = settings.setdefault("artifacts", {})
        root = artifacts.get("root", "artifacts")
        if artifacts_root is not None:
            artifacts["root"] = artifacts_root
        elif "://" not in str(root) and not Path(root).is_absolute():
            artifacts["root"] = str((repo / root).resolve())
    return config


def cmd_package(args: argparse.Namespace) -> int:
    repo = args.repo.resolve()
    out = args.out or repo / "dist"
    package = build_package(repo)
    uri = publish_package(package, out, args.base_uri)
    config = packaged_serve_config(read_serve_config(repo), uri, args.artifacts_root, repo)
    validate_serve_config(config, "the packaged serve config")
    target = out / "serve_config.packaged.yaml"
    target.write_text(f"# GENERATED by `rayfeed package` from {SERVE_CONFIG}: the code comes from {uri}\n"
                      + dump_yaml(config))
    roots = {s["artifacts"]["root"] for s in _deployment_settings(config)}
    print(f"package:      {out / package.name} ({len(package.files)} files, {len(package.data) // 1024} KiB)")
    print(f"working_dir:  {uri}")
    print(f"artifacts:    {', '.join(sorted(roots))}")
    if uri.startswith("file://") or any("://" not in r for r in roots):
        print("              (local paths: every node must see them; a cluster needs --base-uri and "
              "--artifacts-root storage URIs)")
    print(f"serve config: {target}")
    print(f"next:         RAY_AUTH_MODE=token serve deploy {target} --address http://<head>:8265")
    return 0


# ----------------------------------------------------------------------------------- kuberay


def kuberay_serve_config(config: dict) -> dict:
    """serve_config.yaml as the RayService runs it: the differences are the KUBERAY_* above."""
    config = copy.deepcopy(config)
    config.setdefault("http_options", {})["host"] = KUBERAY_HTTP_HOST
    config["proxy_location"] = KUBERAY_PROXY_LOCATION
    for settings in _deployment_settings(config):
        settings.get("artifacts", {}).pop("root", None)
    return config


def render_manifest(manifest_text: str, config: dict) -> str:
    """`manifest_text` with its `serveConfigV2: |` block replaced by `config`; the rest untouched."""
    lines = manifest_text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if re.fullmatch(r"( *)serveConfigV2: \|\n?", line)]
    if len(starts) != 1:
        raise SystemExit(f"{MANIFEST}: expected one `serveConfigV2: |` line, found {len(starts)}")
    start = starts[0]
    indent = len(lines[start]) - len(lines[start].lstrip(" "))
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip(" ")) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # blank lines after the block belong to the manifest
    pad = " " * (indent + 2)
    block = [pad + line if line.strip() else "\n" for line in (GENERATED_NOTE + dump_yaml(config)).splitlines(True)]
    return "".join(lines[: start + 1] + block + lines[end:])


def manifest_serve_config(manifest_text: str) -> dict:
    """The Serve config a manifest carries (what the KubeRay operator submits)."""
    return yaml.safe_load(yaml.safe_load(manifest_text)["spec"]["serveConfigV2"])


def cmd_kuberay(args: argparse.Namespace) -> int:
    repo = args.repo.resolve()
    manifest = repo / MANIFEST
    current = manifest.read_text()
    config = kuberay_serve_config(read_serve_config(repo))
    validate_serve_config(config, "the generated serveConfigV2")
    wanted = render_manifest(current, config)
    if wanted == current:
        print(f"{MANIFEST}: serveConfigV2 matches {SERVE_CONFIG}")
        return 0
    if args.check:
        print(f"{MANIFEST}: serveConfigV2 differs from {SERVE_CONFIG}; run `make kuberay`", file=sys.stderr)
        return 1
    manifest.write_text(wanted)
    print(f"{MANIFEST}: serveConfigV2 regenerated from {SERVE_CONFIG}")
    return 0


# ----------------------------------------------------------------------------------- lock

LOCK_HEADER = """\
# The environment CI tested: every installed distribution pinned (a pip constraints file: it pins
# versions and installs nothing by itself). Linux x86_64, CPython 3.11. `make install` uses it:
#   pip install -c constraints.txt --upgrade pip; pip install -c constraints.txt torch==2.13.0
#   pip install -c constraints.txt -e '.[dev]'
# Regenerate from .venv after an upgrade, then run `make test`:  make lock
# torch is the CPU wheel (2.13.0+cpu); its local label is dropped so that any 2.13.0 wheel pip finds fits.
"""


def lock_text(freeze_lines: list[str]) -> str:
    """The constraints file for `pip freeze --all --exclude-editable` output (pip and setuptools included:
    a fresh venv's own are older than what the project's requirements need)."""
    pins: dict[str, str] = {}
    for line in freeze_lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-e ") or " @ " in line or "==" not in line:
            raise SystemExit(f"cannot pin {line!r}: install it from an index or a wheel, then lock again")
        name, version = line.split("==", 1)
        pins[name.lower()] = f"{name}=={version.split('+', 1)[0]}"  # drop local labels (+cpu)
    return LOCK_HEADER + "".join(f"{pins[key]}\n" for key in sorted(pins))


def pinned_versions(text: str) -> dict[str, str]:
    """name (lower case, '-' for '_') -> version, for every pin in a constraints file."""
    out = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[re.sub(r"[-_.]+", "-", name).lower()] = version.strip()
    return out


def cmd_lock(args: argparse.Namespace) -> int:
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout.splitlines()
    text = lock_text(frozen)
    target = args.repo.resolve() / LOCK
    if args.check:
        same = target.exists() and target.read_text() == text
        print(f"{LOCK}: {'matches' if same else 'differs from'} this environment", file=sys.stdout if same else sys.stderr)
        return 0 if same else 1
    target.write_text(text)
    print(f"{LOCK}: {len(pinned_versions(text))} pins from {sys.prefix}")
    return 0


def register(subparsers) -> None:
    package = subparsers.add_parser("package", help="zip the code for runtime_env.working_dir and write a serve config using it")
    package.add_argument("--out", type=Path, default=None,
                         help="where the zip and serve_config.packaged.yaml go (default: dist/ in the checkout)")
    package.add_argument("--base-uri", default=None,
                         help="copy the zip under this URI (s3://, gs://, hdfs://, file://; http(s):// is printed "
                              "for you to upload); default: the file:// URI of --out (one machine)")
    package.add_argument("--artifacts-root", default=None,
                         help="artifacts.root for every deployment (a storage URI on a cluster); default: the "
                              "configured root, made absolute when it is a relative path")
    package.set_defaults(func=cmd_package)

    kuberay = subparsers.add_parser("kuberay", help=f"regenerate {MANIFEST}'s serveConfigV2 from {SERVE_CONFIG}")
    kuberay.add_argument("--check", action="store_true", help="exit 1 when the manifest differs, write nothing")
    kuberay.set_defaults(func=cmd_kuberay)

    lock = subparsers.add_parser("lock", help=f"pin every installed distribution in {LOCK} (pip freeze)")
    lock.add_argument("--check", action="store_true", help="exit 1 when the lock differs from this environment")
    lock.set_defaults(func=cmd_lock)

    for parser in (package, kuberay, lock):
        parser.add_argument("--repo", type=Path, default=REPO, help="the rayfeed checkout (default: this one)")
