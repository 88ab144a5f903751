"""The boto3 session a deployment's quota reads use: the credentials the proxy uses for it.

Order: a role configured for the account (`quotas.roles`), else the deployment's own
LiteLLM settings (`aws_role_name` assumed with `aws_session_name` at `aws_sts_endpoint`,
from its `aws_access_key_id`/`aws_secret_access_key`/`aws_session_token` or
`aws_profile_name` when given), else the default chain (the ECS task role). Endpoints
stay boto3's business: AWS_ENDPOINT_URL and AWS_ENDPOINT_URL_<SERVICE> are honoured by it.
Everything here blocks (STS): callers run it in an executor.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.configtypes import Secret
from agent.enrich import resolve_env

REFRESH_BEFORE = 300.0  # renew assumed-role credentials this long before they expire


@dataclass(frozen=True)
class CredentialSource:
    """Where one account/region's credentials come from; `describe()` never shows a secret."""

    kind: str  # configured role | deployment role | deployment keys | deployment profile | task role
    role_arn: str = ""
    session_name: str = "gatewatch-quotas"
    sts_endpoint: str = ""
    access_key: Secret | None = None
    secret_key: Secret | None = None
    session_token: Secret | None = None
    profile: str = ""

    def describe(self) -> str:
        parts = [self.kind]
        if self.role_arn:
            parts.append(self.role_arn)
        if self.profile:
            parts.append(f"profile {self.profile}")
        if self.sts_endpoint:
            parts.append(f"sts {self.sts_endpoint}")
        return " ".join(parts)


def _param(params: Mapping[str, Any], name: str, env: Mapping[str, str] | None) -> str:
    value = resolve_env(params.get(name), env)
    return str(value) if value not in (None, "") else ""


def credential_source(params: Mapping[str, Any], account: str, roles: Mapping[str, str],
                      env: Mapping[str, str] | None = None) -> CredentialSource:
    """A deployment's litellm_params (+ the configured roles) -> its CredentialSource."""
    access = _param(params, "aws_access_key_id", env)
    secret = _param(params, "aws_secret_access_key", env)
    token = _param(params, "aws_session_token", env)
    keys: dict[str, Any] = {"access_key": Secret(access), "secret_key": Secret(secret),
                            "session_token": Secret(token) if token else None} if access and secret else {}
    profile = _param(params, "aws_profile_name", env)
    sts = _param(params, "aws_sts_endpoint", env)
    if account in roles:
        return CredentialSource("configured role", role_arn=roles[account])
    role = _param(params, "aws_role_name", env)
    if role:
        return CredentialSource("deployment role", role_arn=role,
                                session_name=_param(params, "aws_session_name", env) or "gatewatch-quotas",
                                sts_endpoint=sts, profile=profile, **keys)
    if keys:
        return CredentialSource("deployment keys", **keys)
    if profile:
        return CredentialSource("deployment profile", profile=profile)
    return CredentialSource("task role")


class SessionCache:
    """boto3 sessions per (source, region), assumed-role ones renewed before they expire."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[tuple[CredentialSource, str], tuple[Any, float]] = {}

    def session(self, source: CredentialSource, region: str, botocore_config: Any = None) -> Any:
        key = (source, region)
        with self._lock:
            cached = self._sessions.get(key)
        if cached is not None and cached[1] - REFRESH_BEFORE > time.time():
            return cached[0]
        session, expires = _make_session(source, region, botocore_config)
        with self._lock:
            self._sessions[key] = (session, expires)
        return session


def _make_session(source: CredentialSource, region: str, botocore_config: Any) -> tuple[Any, float]:
    import boto3

    base_kwargs: dict[str, Any] = {"region_name": region}
    if source.access_key and source.secret_key:
        base_kwargs.update(aws_access_key_id=str(source.access_key), aws_secret_access_key=str(source.secret_key),
                           aws_session_token=str(source.session_token) if source.session_token else None)
    elif source.profile:
        base_kwargs["profile_name"] = source.profile
    base = boto3.Session(**base_kwargs)
    if not source.role_arn:
        return base, float("inf")
    sts = base.client("sts", endpoint_url=source.sts_endpoint or None, config=botocore_config)
    creds = sts.assume_role(RoleArn=source.role_arn, RoleSessionName=source.session_name)["Credentials"]
    session = boto3.Session(aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                            aws_session_token=creds["SessionToken"], region_name=region)
    return session, creds["Expiration"].timestamp()
