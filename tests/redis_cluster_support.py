"""A real Redis Cluster on loopback: 3 primaries (+ a replica each when asked), TLS and a password.

Every node is a `redis-server` process with its own tmp dir, client port and cluster-bus
port (both free loopback ports), TLS on the client port, the bus and replication, and
`requirepass`/`masterauth`. `redis-cli --cluster create` assigns the slots. The node
timeout is small (2 s) so a killed primary's replica takes over in a few seconds.

Same face as `RedisServer` (tests/redis_support.py) where the shared-state tests need it:
`url`, `client()`, `shutdown(save)` / `start()` (the whole cluster away, then back from
its dumps and nodes.conf on the same ports), `close()`; plus `state_config()` (the
`state:` keys a sidecar needs: url, password, CA file), `kill_primary_of(key)` and
`failover_wait()`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.conftest import free_port
from tests.redis_support import REDIS_SERVER, RedisServer, self_signed

REDIS_CLI = shutil.which("redis-cli")
PASSWORD = "cluster-secret-pw"
NODE_TIMEOUT_MS = 2000


class ClusterNode(RedisServer):
    """One cluster node: a redis-server with cluster mode on, its own bus port, TLS when given."""

    def __init__(self, workdir: Path, tls: tuple[Path, Path] | None, password: str) -> None:
        super().__init__(workdir, password=password, tls=tls)
        self.bus_port = free_port()

    def start(self, timeout: float = 20.0) -> ClusterNode:
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--dbfilename", "dump.rdb", "--logfile", str(self.log), "--daemonize", "no",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-port", str(self.bus_port), "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor", "0", "--requirepass", self.password or "",
                "--masterauth", self.password or ""]
        if self.tls is not None:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file",
                     str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no", "--tls-cluster", "yes",
                     "--tls-replication", "yes"]
        else:
            args += ["--port", str(self.port)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_listening(timeout)
        return self

    def node_client(self) -> Any:
        import redis

        tls = {"ssl": True, "ssl_cert_reqs": "none"} if self.tls else {}
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, decode_responses=True,
                           socket_timeout=5, **tls)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save; whatever the replica has not received is gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class RedisClusterServer:
    """Three primaries (and `replicas` each) made into one cluster by redis-cli; what the tests point sidecars at."""

    def __init__(self, workdir: Path, replicas: int = 0, password: str = PASSWORD, tls: bool = True) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.replicas = replicas
        self.tls = tls
        self.cert, key = self_signed(self.dir)
        self.nodes = [ClusterNode(self.dir / f"node{i}", (self.cert, key) if tls else None, password)
                      for i in range(3 * (1 + replicas))]

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.nodes[0].port}"

    def state_config(self) -> dict[str, Any]:
        tls = {"tls_ca_file": str(self.cert)} if self.tls else {}
        return {"url": self.url, "password": self.password, **tls}

    def create(self, timeout: float = 60.0) -> RedisClusterServer:
        assert REDIS_CLI is not None
        for node in self.nodes:
            node.start()
        tls = ["--tls", "--cacert", str(self.cert)] if self.tls else []
        args = [REDIS_CLI, *tls, "-a", self.password, "--no-auth-warning",
                "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                "--cluster-replicas", str(self.replicas), "--cluster-yes"]
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
        self.wait_ok(timeout)
        return self

    def wait_ok(self, timeout: float = 60.0) -> None:
        """Until every live node says cluster_state:ok and sees every replica attached."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if all(self._node_ok(n) for n in self.nodes if n.proc is not None and n.proc.poll() is None):
                    return
            except Exception:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the redis cluster did not settle")
            time.sleep(0.2)

    def _node_ok(self, node: ClusterNode) -> bool:
        client = node.node_client()
        try:
            if client.cluster("info").get("cluster_state") != "ok":
                return False
            slots = client.execute_command("CLUSTER", "SLOTS")
            if len(slots) < 3 or not all(len(s) - 2 >= 1 + self.replicas for s in slots):
                return False
            info = client.info("replication")
            if info.get("role") == "master" and any(str(s[2][1]) == str(node.port) for s in slots):
                # a primary's replicas in sync, so WAIT can confirm writes from the first flush
                links = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                return len(links) >= self.replicas and all(v.get("state") == "online" for v in links)
            return True
        finally:
            client.close()

    def client(self) -> Any:  # a synchronous cluster client for assertions
        from redis.cluster import RedisCluster

        live = next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)
        tls = {"ssl": True, "ssl_cert_reqs": "none"} if self.tls else {}
        return RedisCluster(host="127.0.0.1", port=live.port, password=self.password, decode_responses=True, **tls)

    def primary_of(self, key: str) -> ClusterNode:
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            client = node.node_client()
            try:
                for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(primary[1])
                        return next(n for n in self.nodes if n.port == port)
            finally:
                client.close()
        raise RuntimeError(f"no node serves slot {slot}")

    def primaries(self) -> list[ClusterNode]:
        """The nodes that serve slots now (replicas promoted by a failover included)."""
        for node in self.nodes:
            if node.proc is None or node.proc.poll() is not None:
                continue
            client = node.node_client()
            try:
                ports = {int(primary[1]) for _s, _e, primary, *_ in client.execute_command("CLUSTER", "SLOTS")}
            finally:
                client.close()
            return [n for n in self.nodes if n.port in ports]
        return []

    def flushall(self) -> None:
        for node in self.primaries():
            client = node.node_client()
            try:
                client.flushall()
            finally:
                client.close()

    def shutdown(self, save: bool = True) -> None:
        for node in self.nodes:
            node.shutdown(save=save)

    def start(self, timeout: float = 60.0) -> RedisClusterServer:
        """Back on the same ports with the same dirs: nodes.conf and the dumps bring the cluster back."""
        for node in self.nodes:
            node.start()
        self.wait_ok(timeout)
        return self

    def close(self) -> None:
        for node in self.nodes:
            node.close()
