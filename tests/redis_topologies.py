"""Real Redis topologies for the tests: a 3-primary / 3-replica Redis Cluster and a primary with
one replica watched by three Sentinels, all ``redis-server`` processes on loopback ports."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import RedisProcess, free_port, wait_for


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is a valid, free port too."""
    while True:
        port = free_port()
        if port + 10000 < 65536:
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port + 10000))
                except OSError:
                    continue
            return port


def cli(port: int, *args: str, timeout: float = 10) -> str:
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    ).stdout


@dataclass
class RedisClusterProcesses:
    """Six cluster-enabled redis-servers joined by ``redis-cli --cluster create``, one replica
    per primary."""

    nodes: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def start(self) -> RedisClusterProcesses:
        for _ in range(6):
            node = RedisProcess(port=cluster_port())
            node.extra = [
                "--cluster-enabled",
                "yes",
                "--cluster-node-timeout",
                "1000",
                "--cluster-config-file",
                str(node.directory / "nodes.conf"),
            ]
            self.nodes.append(node.start())
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "1",
                "--cluster-yes",
            ],
            capture_output=True,
            check=True,
            timeout=60,
        )
        wait_for(self.ok, 30, "the Redis Cluster")
        return self

    def ok(self) -> bool:
        return all("cluster_state:ok" in cli(n.port, "cluster", "info") for n in self.nodes)

    def roles(self) -> dict[int, str]:
        return {
            n.port: cli(n.port, "role").split()[0]
            for n in self.nodes
            if n.proc and n.proc.poll() is None
        }

    def primary_of(self, key: str) -> RedisProcess:
        slot = int(cli(self.nodes[0].port, "cluster", "keyslot", key))
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            for line in cli(node.port, "cluster", "nodes").splitlines():
                parts = line.split()
                if "myself" in parts[2] and "master" in parts[2]:
                    for span in parts[8:]:
                        lo, _, hi = span.partition("-")
                        if lo.isdigit() and int(lo) <= slot <= int(hi or lo):
                            return node
        raise LookupError(f"no primary serves slot {slot}")

    def replica_of(self, primary: RedisProcess) -> RedisProcess:
        node_id = cli(primary.port, "cluster", "myid").strip()
        for node in self.nodes:
            if node is not primary and node.proc and node.proc.poll() is None:
                info = cli(node.port, "cluster", "nodes")
                mine = next(x for x in info.splitlines() if "myself" in x)
                if mine.split()[3] == node_id:
                    return node
        raise LookupError("no replica")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
            shutil.rmtree(node.directory, ignore_errors=True)

    def __enter__(self) -> RedisClusterProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RedisSentinelProcesses:
    """A primary, one replica and three Sentinels monitoring it as ``mymaster`` (quorum 2)."""

    primary: RedisProcess = field(default_factory=RedisProcess)
    replica: RedisProcess = field(default_factory=RedisProcess)
    sentinels: list[tuple[int, subprocess.Popen[bytes]]] = field(default_factory=list)
    directory: Path = field(default_factory=lambda: RedisProcess().directory)
    name: str = "mymaster"

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port, _ in self.sentinels]

    def start(self) -> RedisSentinelProcesses:
        self.primary.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        for i in range(3):
            port = free_port()
            conf = self.directory / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.directory}\n"
                f"sentinel monitor {self.name} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {self.name} 1000\n"
                f"sentinel failover-timeout {self.name} 5000\n"
            )
            proc = subprocess.Popen(
                ["redis-server", str(conf), "--sentinel"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.sentinels.append((port, proc))
        wait_for(self.ready, 30, "the Sentinels")
        return self

    def ready(self) -> bool:
        for port, _ in self.sentinels:
            replicas = cli(port, "sentinel", "replicas", self.name)
            if str(self.replica.port) not in replicas or "s_down" in replicas:
                return False
            if len(cli(port, "sentinel", "sentinels", self.name).split("\n")) < 4:
                return False
        return "master_link_status:up" in cli(self.replica.port, "info", "replication")

    def master_port(self) -> int:
        out = cli(self.sentinels[0][0], "sentinel", "get-master-addr-by-name", self.name)
        return int(out.split()[1])

    def failover(self, timeout: float = 20) -> int:
        """``SENTINEL FAILOVER``; waits until the old replica is the primary; its port."""
        old = self.master_port()
        cli(self.sentinels[0][0], "sentinel", "failover", self.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            new = self.master_port()
            if new != old and cli(new, "role").split()[0] == "master":
                return new
            time.sleep(0.2)
        raise TimeoutError("the Sentinel failover did not finish")

    def stop(self) -> None:
        for _, proc in self.sentinels:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        self.replica.stop()
        self.primary.stop()
        for d in (self.directory, self.primary.directory, self.replica.directory):
            shutil.rmtree(d, ignore_errors=True)

    def __enter__(self) -> RedisSentinelProcesses:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
