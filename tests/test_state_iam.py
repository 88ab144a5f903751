"""ElastiCache IAM auth: the token is botocore's own SigV4 presigned URL, refreshed before it expires.

Fixed credentials and a frozen botocore clock make the token deterministic, so it is
compared with what botocore's `RequestSigner.generate_presigned_url` (the path AWS's own
ElastiCache example uses) makes for the same request, and then set as an ACL user's
password on a real TLS redis-server: the sidecar authenticates with it as that user.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path
from urllib.parse import ParseResult, parse_qs, urlencode, urlunparse

import pytest
from botocore.credentials import Credentials

from agent.config import parse_config
from agent.configtypes import ConfigError
from agent.state.iam import REFRESH_AFTER, ElastiCacheIAMProvider, presigned_token
from agent.state.redis import RedisState
from tests.redis_support import RedisServer, requires_redis, self_signed

FROZEN = datetime.datetime(2026, 12, 7, 14, 30, 0)
CREDS = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "session-token-example")


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    import botocore.auth

    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda *a, **k: FROZEN)


def botocore_reference(user: str, cache: str, region: str, serverless: bool) -> str:
    """The token as AWS's documented Python example makes it (RequestSigner.generate_presigned_url)."""
    import botocore.session
    from botocore.model import ServiceId
    from botocore.signers import RequestSigner

    session = botocore.session.get_session()
    signer = RequestSigner(ServiceId("elasticache"), region, "elasticache", "v4", CREDS,
                           session.get_component("event_emitter"))
    query = {"Action": "connect", "User": user}
    if serverless:
        query["ResourceType"] = "ServerlessCache"
    url = urlunparse(ParseResult(scheme="https", netloc=cache, path="/", query=urlencode(query), params="",
                                 fragment=""))
    signed = signer.generate_presigned_url({"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
                                           operation_name="connect", expires_in=900, region_name=region)
    return signed.removeprefix("https://")


@pytest.mark.parametrize("serverless", [True, False])
def test_token_equals_botocores_own_presigned_url(frozen_clock: None, serverless: bool) -> None:
    token = presigned_token(CREDS, "gatewatch", "my-cache", "eu-west-1", serverless)
    assert token == botocore_reference("gatewatch", "my-cache", "eu-west-1", serverless)
    host, _, query = token.partition("/?")
    params = {k: v[0] for k, v in parse_qs(query).items()}
    assert host == "my-cache" and not token.startswith("https://")
    assert params["Action"] == "connect" and params["User"] == "gatewatch"
    assert params.get("ResourceType") == ("ServerlessCache" if serverless else None)
    assert params["X-Amz-Algorithm"] == "AWS4-HMAC-SHA256" and params["X-Amz-Expires"] == "900"
    assert params["X-Amz-Date"] == "20261207T143000Z"
    assert params["X-Amz-Credential"] == "AKIDEXAMPLE/20261207/eu-west-1/elasticache/aws4_request"
    assert params["X-Amz-Security-Token"] == "session-token-example"


def test_token_is_cached_and_refreshed_before_it_expires(frozen_clock: None) -> None:
    now = [1000.0]
    calls = []

    def credentials() -> Credentials:
        calls.append(now[0])
        return CREDS

    provider = ElastiCacheIAMProvider("gatewatch", "my-cache", "eu-west-1", True, credentials, clock=lambda: now[0])
    first = provider.get_credentials()
    assert first[0] == "gatewatch"
    now[0] += REFRESH_AFTER - 1
    assert provider.get_credentials() == first and len(calls) == 1  # reused while young
    now[0] += 1
    provider.get_credentials()
    assert len(calls) == 2 and provider.tokens_made == 2  # renewed 5 minutes before the 15-minute expiry
    assert REFRESH_AFTER < 900


def test_iam_config_errors() -> None:
    base = {"url": "rediss://cache.serverless.euw1.cache.amazonaws.com:6379",
            "iam_auth": {"user": "gatewatch", "cache_name": "my-cache", "region": "eu-west-1"}}
    cfg = parse_config({"state": base}).state
    assert cfg.iam_auth is not None and cfg.iam_auth.serverless is True
    with pytest.raises(ConfigError, match=r"state\.url: ElastiCache IAM authentication needs TLS"):
        parse_config({"state": {**base, "url": "redis://x:6379"}})
    with pytest.raises(ConfigError, match=r"state\.iam_auth: expected either iam_auth or a password"):
        parse_config({"state": {**base, "password": "pw"}})
    with pytest.raises(ConfigError, match=r"state\.iam_auth\.cache_name: expected"):
        parse_config({"state": {**base, "iam_auth": {"user": "gatewatch", "region": "eu-west-1"}}})


@requires_redis
@pytest.mark.integration
async def test_sidecar_authenticates_with_the_token_as_that_user(frozen_clock: None, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", CREDS.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", CREDS.secret_key)
    monkeypatch.setenv("AWS_SESSION_TOKEN", CREDS.token)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    cert, key = self_signed(tmp_path)
    server = RedisServer(tmp_path / "redis", password="admin-pw", tls=(cert, key)).start()
    try:
        token = presigned_token(CREDS, "gatewatch", "my-cache", "eu-west-1", True)
        admin = server.client()
        admin.acl_setuser("gatewatch", enabled=True, passwords=[f"+{token}"], keys=["gw:*"], commands=["+@all"])
        cfg = parse_config({"state": {"url": server.url, "tls_ca_file": str(cert), "key_prefix": "gw:",
                                      "iam_auth": {"user": "gatewatch", "cache_name": "my-cache",
                                                   "region": "eu-west-1"}}}).state
        state = RedisState(cfg, None, tmp_path / "state")
        await state.start()
        try:
            assert state.up, state.healthy()
            assert await state.claim("page", "task-a", 30.0)
            clients = admin.client_list()
            assert any(c["user"] == "gatewatch" and c["name"].startswith("gatewatch-") for c in clients)
            assert token not in state.healthy()[1]
        finally:
            await state.stop(time.monotonic() + 30)
    finally:
        server.close()
