"""The `state:` config section: where shared state lives when several tasks must act as one.

Absent `url`, the embedded backend (memory + SQLite in `state_dir`) is used. With
`url: redis://...` (or `rediss://` for TLS), budgets, `scope: global` rule windows,
silences and the notification de-dup live in Redis, normally the one LiteLLM already
uses for its router (`REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD` in its task).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from agent.configtypes import ConfigError, Duration, Secret

SCHEMES = ("redis", "rediss", "unix")


@dataclass
class StateConfig:
    # redis://[user:password@]host:6379/0, rediss:// for TLS, unix:///path.sock; a Secret because
    # a password may be written into it (prefer `password: ${REDIS_PASSWORD}`)
    url: Secret | None = None
    password: Secret | None = None
    username: str | None = None
    # every key gatewatch writes starts with this: one prefix per service sharing the Redis
    key_prefix: str = "gatewatch:"
    flush_interval: Duration = Duration(1)  # local pre-aggregates -> Redis, one pipelined round trip
    max_queued_increments: int = 100000  # distinct (key, field) increments held while Redis is down
    claim_ttl: Duration = Duration(30)  # notification claim lease: a dead holder's claim is taken over after it
    timeout: Duration = Duration(1)  # per round trip; a slow Redis counts as down after this
    connect_timeout: Duration = Duration(2)
    tls_ca_file: str | None = None  # rediss://: CA bundle (default: the system's)
    tls_verify: bool = True  # rediss://: verify the server certificate and host name

    @property
    def enabled(self) -> bool:
        return bool(self.url)

    def validate(self, path: str) -> None:
        def where(key: str) -> str:
            return f"{path}.{key}" if path else key

        if self.url:
            try:
                parts = urlsplit(str(self.url))
                has_port = parts.port is not None  # raises on a non-numeric or out-of-range port
            except ValueError:
                raise ConfigError(where("url"), "expected redis://host:port/db, rediss://... or unix:///path") from None
            if parts.scheme not in SCHEMES:
                raise ConfigError(where("url"), "expected a redis://, rediss:// or unix:// URL")
            if parts.scheme != "unix" and not parts.hostname:
                raise ConfigError(where("url"), "expected a host, e.g. redis://redis.internal:6379/0")
            if parts.scheme == "unix" and has_port:
                raise ConfigError(where("url"), "a unix:// URL takes a path, not a port")
        if not self.key_prefix:
            raise ConfigError(where("key_prefix"), "expected a non-empty prefix, e.g. gatewatch:my-service:")
        if self.flush_interval < 0.05:
            raise ConfigError(where("flush_interval"), "expected at least 50ms")
        if self.max_queued_increments < 1:
            raise ConfigError(where("max_queued_increments"), "expected a positive integer")
        if self.claim_ttl < 1:
            raise ConfigError(where("claim_ttl"), "expected at least 1s")
        if self.timeout <= 0 or self.connect_timeout <= 0:
            raise ConfigError(where("timeout" if self.timeout <= 0 else "connect_timeout"),
                              "expected a positive duration")


def display_url(url: str) -> str:
    """Where Redis is, without user and password, for logs and /readyz: `host:port/db` (+ " tls").

    Not the URL itself: the whole URL is a registered secret, so the log filter would mask it.
    """
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "(unparsable url)"
    if parts.scheme == "unix":
        return f"socket {parts.path}"
    where = f"{parts.hostname or ''}{port}{parts.path or '/0'}"
    return f"{where} tls" if parts.scheme == "rediss" else where
