"""The `state:` config section: where shared state lives when several tasks must act as one.

Absent `url`, the embedded backend (memory + SQLite in `state_dir`) is used. With
`url: redis://...` (or `rediss://` for TLS), budgets, `scope: global` rule windows,
silences and the notification de-dup live in Redis, normally the one LiteLLM already
uses for its router (`REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD` in its task).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from agent.configtypes import ConfigError, Duration, Secret

SCHEMES = ("redis", "rediss", "unix")


@dataclass
class IamAuthConfig:
    """ElastiCache IAM authentication: the task's AWS credentials sign a token used as the password."""

    user: str = ""  # the ElastiCache user id (its user name must be the same), authentication mode IAM
    cache_name: str = ""  # the serverless cache name or the replication group id
    region: str | None = None  # default: AWS_REGION / AWS_DEFAULT_REGION (set by ECS)
    serverless: bool = True  # ElastiCache Serverless (ResourceType=ServerlessCache in the token)

    def check(self, path: str) -> None:
        """Called by StateConfig.validate (not `validate`: a failing optional section would read "expected a
        mapping" instead of the reason)."""
        if not self.user:
            raise ConfigError(f"{path}.user", "expected the ElastiCache user id (IAM authentication mode)")
        if not self.cache_name:
            raise ConfigError(f"{path}.cache_name", "expected the cache name (serverless) or replication group id")
        if not self.resolved_region():
            raise ConfigError(f"{path}.region", "expected an AWS region (or AWS_REGION in the environment)")

    def resolved_region(self) -> str | None:
        return self.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


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
    # Redis Cluster (ElastiCache Serverless, cluster-mode replication groups): auto asks the server on connect
    cluster: bool | Literal["auto"] = "auto"
    # cluster: how long a notification claim waits for a shard that fails over before sending anyway
    failover_timeout: Duration = Duration(20)
    iam_auth: IamAuthConfig | None = None  # ElastiCache IAM auth instead of a password (needs rediss://)

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
            if self.cluster is True and parts.scheme == "unix":
                raise ConfigError(where("cluster"), "Redis Cluster is reached over TCP: expected a redis:// or "
                                  "rediss:// URL")
            if self.cluster is True and parts.path not in ("", "/", "/0"):
                raise ConfigError(where("url"), "Redis Cluster has only database 0: expected /0 or no path")
            if self.iam_auth is not None:
                self.iam_auth.check(where("iam_auth"))
                if parts.scheme != "rediss":
                    raise ConfigError(where("url"), "ElastiCache IAM authentication needs TLS: expected rediss://")
                if self.password or parts.password:
                    raise ConfigError(where("iam_auth"), "expected either iam_auth or a password, not both")
        if "{" in self.key_prefix or "}" in self.key_prefix:
            raise ConfigError(where("key_prefix"), "expected no { or }: gatewatch adds its own Redis Cluster hash tags")
        if not self.key_prefix:
            raise ConfigError(where("key_prefix"), "expected a non-empty prefix, e.g. gatewatch:my-service:")
        if self.flush_interval < 0.05:
            raise ConfigError(where("flush_interval"), "expected at least 50ms")
        if self.max_queued_increments < 1:
            raise ConfigError(where("max_queued_increments"), "expected a positive integer")
        if self.claim_ttl < 1:
            raise ConfigError(where("claim_ttl"), "expected at least 1s")
        if self.failover_timeout < 0:
            raise ConfigError(where("failover_timeout"), "expected a duration, 0 or more")
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
