"""Building the Redis client: one node or Redis Cluster, TLS, password or ElastiCache IAM.

`state.cluster: auto` asks the server once it answers (`INFO cluster` -> `cluster_enabled`),
so the same config works against a single node, a cluster-mode replication group and
ElastiCache Serverless (always cluster mode). Cluster routing, MOVED/ASK redirects and
topology refreshes are redis-py's own `redis.asyncio.cluster.RedisCluster`; gatewatch only
keeps every multi-key operation inside one slot (slots.py).

No automatic retries in either client: a retry is gatewatch's decision (a batch of
increments is retried with its sequence numbers, so it lands once), and a fast failure
lets the backend report "down" instead of stalling the flush loop.
"""

from __future__ import annotations

from typing import Any

from agent.state.config import StateConfig


def client_kwargs(cfg: StateConfig, client_name: str) -> dict[str, Any]:
    """Connection arguments shared by the single-node and the cluster client."""
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    kwargs: dict[str, Any] = {
        "socket_timeout": float(cfg.timeout),
        "socket_connect_timeout": float(cfg.connect_timeout),
        "decode_responses": True,
        "retry": Retry(NoBackoff(), 0),
        "client_name": client_name,
    }
    if cfg.iam_auth is not None:
        from agent.state.iam import ElastiCacheIAMProvider

        iam = cfg.iam_auth
        kwargs["credential_provider"] = ElastiCacheIAMProvider(iam.user, iam.cache_name, iam.resolved_region() or "",
                                                               iam.serverless)
    else:
        if cfg.password:
            kwargs["password"] = str(cfg.password)
        if cfg.username:
            kwargs["username"] = cfg.username
    if str(cfg.url).startswith("rediss://"):
        if cfg.tls_ca_file:
            kwargs["ssl_ca_certs"] = cfg.tls_ca_file
        if not cfg.tls_verify:
            kwargs["ssl_cert_reqs"] = "none"
            kwargs["ssl_check_hostname"] = False
    return kwargs


async def detect_cluster(cfg: StateConfig, kwargs: dict[str, Any]) -> bool:
    """True when the server at `state.url` runs in cluster mode (raises if it cannot be asked)."""
    if cfg.cluster != "auto":
        return bool(cfg.cluster)
    if str(cfg.url).startswith("unix://"):
        return False
    import redis.asyncio as aioredis
    from redis.exceptions import ResponseError

    probe = aioredis.Redis.from_url(str(cfg.url), **kwargs)
    try:
        try:
            info = await probe.info("cluster")
            return bool(int(info.get("cluster_enabled", 0) or 0))
        except ResponseError:  # INFO not allowed (an ACL, a managed service): CLUSTER INFO answers only in cluster mode
            try:
                await probe.execute_command("CLUSTER", "INFO")
            except ResponseError as exc:
                if "disabled" in str(exc).lower():
                    return False
                raise
            return True
    finally:
        await probe.aclose()


def make_client(cfg: StateConfig, kwargs: dict[str, Any], cluster: bool) -> Any:
    if not cluster:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(str(cfg.url), **kwargs)
    from redis.asyncio.cluster import RedisCluster

    url = str(cfg.url)
    parts = url.split("/")
    if len(parts) > 3 and parts[3] in ("0", ""):
        url = "/".join(parts[:3])  # the cluster client takes no database number
    return RedisCluster.from_url(url, **kwargs)


def replicas_of(client: Any, key: str) -> tuple[Any, int]:
    """(primary node, number of its replicas) serving `key`, from the client's topology cache."""
    from redis.crc import key_slot

    nodes = client.nodes_manager.slots_cache.get(key_slot(key.encode()))
    if not nodes:
        return None, 0
    return nodes[0], len(nodes) - 1
