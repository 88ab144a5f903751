"""Service Quotas reads against a local awsJson1.1 endpoint: pagination, throttling, errors, credentials."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from agent.quotas.credentials import CredentialSource, SessionCache, credential_source
from agent.quotas.servicequotas import list_bedrock_quotas
from tests.servicequotas_support import FakeServiceQuotas

pytestmark = pytest.mark.integration

HAIKU = "Anthropic Claude 3 Haiku"
ROWS = [(f"On-demand InvokeModel tokens per minute for {HAIKU}", "L-AAAA0001", 200000.0),
        (f"On-demand InvokeModel requests per minute for {HAIKU}", "L-AAAA0002", 1000.0),
        (f"Cross-Region InvokeModel tokens per minute for {HAIKU}", "L-AAAA0003", 400000.0),
        (f"Model invocation max tokens per day for {HAIKU}", "L-AAAA0004", 288000000.0),
        ("Cross-Model Max Tokens Per Day", "L-AAAA0005", 1e9)]


@pytest.fixture
def fake_sq(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServiceQuotas]:
    fake = FakeServiceQuotas(quotas={"eu-central-1": ROWS})
    monkeypatch.setenv("AWS_ENDPOINT_URL_SERVICE_QUOTAS", fake.start())
    for name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIATASKROLETASKROLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "task-secret")
    yield fake
    fake.stop()


KEYS = CredentialSource("deployment keys", access_key="AKIAFAKEFAKEFAKEFAKE", secret_key="x" * 40)  # type: ignore[arg-type]


def test_every_page_is_read_with_the_deployments_keys(fake_sq):
    listed = list_bedrock_quotas(SessionCache(), KEYS, "eu-central-1", max_attempts=3)
    assert [(q.name, q.code, q.value) for q in listed] == ROWS
    calls = fake_sq.list_calls()
    assert len(calls) == 3  # 5 rows, 2 per page
    assert [c.body.get("NextToken") for c in calls] == [None, "2", "4"]
    assert {(c.region, c.access_key, c.service) for c in calls} == {("eu-central-1", "AKIAFAKEFAKEFAKEFAKE",
                                                                     "servicequotas")}


def test_throttling_is_retried_and_counted(fake_sq):
    fake_sq.throttle_next = 2
    seen: list[int] = []
    listed = list_bedrock_quotas(SessionCache(), KEYS, "eu-central-1", max_attempts=4,
                                 on_throttle=lambda: seen.append(1))
    assert len(listed) == len(ROWS)
    assert len(seen) == 2
    assert len(fake_sq.list_calls()) == 3 + 2


def test_throttling_past_the_attempts_raises(fake_sq):
    fake_sq.throttle_next = 10
    with pytest.raises(Exception) as info:
        list_bedrock_quotas(SessionCache(), KEYS, "eu-central-1", max_attempts=2)
    assert "ThrottlingException" in str(info.value)


def test_task_role_is_the_default_chain(fake_sq):
    source = credential_source({}, "444444444444", {})
    assert source.kind == "task role"
    list_bedrock_quotas(SessionCache(), source, "eu-central-1", max_attempts=1)
    assert fake_sq.list_calls()[0].access_key == "AKIATASKROLETASKROLE"


def test_credential_source_order_and_env_indirection():
    env = {"KEY_ID": "AKIAFROMENVFROMENV00", "SECRET": "s" * 40}
    params = {"aws_access_key_id": "os.environ/KEY_ID", "aws_secret_access_key": "os.environ/SECRET",
              "aws_role_name": "arn:aws:iam::555555555555:role/invoke", "aws_session_name": "lab",
              "aws_sts_endpoint": "http://127.0.0.1:1"}
    role = credential_source(params, "555555555555", {}, env)
    assert (role.kind, role.role_arn, role.session_name, role.sts_endpoint) == (
        "deployment role", "arn:aws:iam::555555555555:role/invoke", "lab", "http://127.0.0.1:1")
    assert str(role.access_key) == "AKIAFROMENVFROMENV00"
    assert "s" * 40 not in role.describe() and "s" * 40 not in repr(role)
    configured = credential_source(params, "555555555555", {"555555555555": "arn:aws:iam::555555555555:role/gw"})
    assert (configured.kind, configured.role_arn) == ("configured role", "arn:aws:iam::555555555555:role/gw")
    assert credential_source({"aws_profile_name": "p"}, "1", {}).kind == "deployment profile"
    assert os.environ.get("KEY_ID") is None
