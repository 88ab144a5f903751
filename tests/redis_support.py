"""A real redis-server on a random loopback port, for the shared-state tests.

Started with `--save '' --appendonly no` (nothing written while it runs). `shutdown()`
asks it to SHUTDOWN SAVE, which writes its data to `dir` even with saving disabled, so a
`start()` on the same port and dir comes back with the same data (a Redis restart, the way
ElastiCache keeps data through a node restart). `pause()` / `resume()` freeze the process
(SIGSTOP / SIGCONT): connections stay open and commands hang, the "Redis is slow" case.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

REDIS_SERVER = shutil.which("redis-server")

requires_redis = pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed "
                                    "(make test-deps / scripts/install-test-deps.sh)")


class RedisServer:
    def __init__(self, workdir: Path, port: int | None = None, password: str | None = None,
                 tls: tuple[Path, Path] | None = None, extra_args: list[str] | None = None) -> None:
        self.dir = workdir
        self.extra_args = list(extra_args or [])
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.password = password
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "redis.log"

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> RedisServer:
        assert REDIS_SERVER is not None
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                "--dbfilename", "dump.rdb", "--logfile", str(self.log), "--daemonize", "no"]
        if self.tls:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert), "--tls-key-file",
                     str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        args += self.extra_args
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._wait_listening(timeout)
        return self

    def state_config(self) -> dict[str, str]:
        """The `state:` keys a sidecar needs to reach this server."""
        return {"url": self.url}

    def _wait_listening(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.log.read_text() if self.log.exists() else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    def client(self):  # a plain synchronous client for assertions
        import redis

        kwargs = {"decode_responses": True}
        if self.tls:
            kwargs["ssl_cert_reqs"] = "none"
        return redis.Redis.from_url(self.url, password=self.password, **kwargs)

    def shutdown(self, save: bool = True) -> None:
        """Stop the server (data kept in dir/dump.rdb when `save`)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.client().shutdown(save=save, nosave=not save)
        except Exception:
            pass  # redis-py reports the closed connection of a successful SHUTDOWN as an error
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(timeout=10)


def self_signed(dirpath: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 / localhost and its key (PEM files)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = dirpath / "redis.crt", dirpath / "redis.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path
