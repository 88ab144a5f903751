"""ElastiCache IAM authentication: a SigV4-presigned token as the Redis password.

ElastiCache (serverless or a replication group with an IAM-enabled user) accepts
`AUTH <user> <token>` where the token is a presigned `GET https://<cache>/?Action=connect&
User=<user>[&ResourceType=ServerlessCache]` for service `elasticache`, valid 15 minutes,
with the scheme stripped. The task's credentials (the ECS task role, through botocore's
usual chain) sign it, so no password is stored anywhere.

A token only matters when a connection authenticates (ElastiCache closes IAM connections
after 12 hours; the client reconnects and authenticates again), so the provider caches
one and makes a new one once it is `REFRESH_AFTER` old, well before it expires. Making it
may fetch credentials over HTTP (the container credentials endpoint), so the async path
runs it in a worker thread: nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from redis.credentials import CredentialProvider

TOKEN_LIFETIME = 900  # seconds: the longest ElastiCache accepts
REFRESH_AFTER = 600.0  # a cached token is replaced once this old (5 minutes of margin before it expires)


def presigned_token(credentials: Any, user: str, cache_name: str, region: str, serverless: bool,
                    expires: int = TOKEN_LIFETIME) -> str:
    """The IAM auth token for `user` on `cache_name` (botocore's SigV4 query signing, no network)."""
    from botocore.auth import SigV4QueryAuth
    from botocore.awsrequest import AWSRequest

    query = {"Action": "connect", "User": user}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    request = AWSRequest(method="GET", url=f"https://{cache_name}/?{urlencode(query)}")
    SigV4QueryAuth(credentials, "elasticache", region, expires=expires).add_auth(request)
    return request.prepare().url.removeprefix("https://")


class ElastiCacheIAMProvider(CredentialProvider):
    """redis-py credential provider: (user, fresh token) for every new connection.

    `credentials` returns botocore credentials (default: the botocore session's chain,
    i.e. the ECS task role); it is called at most once per token.
    """

    def __init__(self, user: str, cache_name: str, region: str, serverless: bool,
                 credentials: Callable[[], Any] | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.user = user
        self.cache_name = cache_name
        self.region = region
        self.serverless = serverless
        self.clock = clock
        self._credentials = credentials or _session_credentials
        self._token: str | None = None
        self._made_at = 0.0
        self._lock = threading.Lock()
        self.tokens_made = 0

    def token(self) -> str:
        with self._lock:
            now = self.clock()
            if self._token is None or now - self._made_at >= REFRESH_AFTER:
                creds = self._credentials()
                if creds is None:
                    raise RuntimeError("state.iam_auth: no AWS credentials found (task role, environment or profile)")
                frozen = creds.get_frozen_credentials() if hasattr(creds, "get_frozen_credentials") else creds
                self._token = presigned_token(frozen, self.user, self.cache_name, self.region, self.serverless)
                self._made_at = now
                self.tokens_made += 1
            return self._token

    def get_credentials(self) -> tuple[str, str]:
        return self.user, self.token()

    async def get_credentials_async(self) -> tuple[str, str]:
        return self.user, await asyncio.to_thread(self.token)


def _session_credentials() -> Any:
    import botocore.session

    return botocore.session.get_session().get_credentials()
