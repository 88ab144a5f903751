"""The `notify` config section: Alertmanager's shape, clear errors, secrets never in messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.alerts.config import NotifyConfig, RouteConfig, mask_url
from agent.config import load_config, parse_config
from agent.configtypes import ConfigError

SLACK = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
TEAMS_OLD = "https://contoso.webhook.office.com/webhookb2/3c9a2d1e-aaaa@b/IncomingWebhook/0f9e8d7c6b5a/1d2c3b4a"


def notify(data: dict) -> NotifyConfig:
    return parse_config({"notify": data}).notify


def error(data: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config({"notify": data})
    return info.value


def test_default_is_off() -> None:
    cfg = parse_config({}).notify
    assert not cfg.enabled and cfg.receivers == []


def test_full_alertmanager_shape(tmp_path: Path) -> None:
    path = tmp_path / "gw.yaml"
    path.write_text("""
notify:
  receivers:
    - name: oncall
      urls: ["${SLACK_URL}", "json://127.0.0.1:8080/alerts"]
      send_resolved: true
    - name: hooks
      webhook: {url: "${HOOK_URL}", hmac_secret: "${HOOK_SECRET}", headers: {X-Team: "${HOOK_TEAM:-ml}"}}
      send_resolved: false
  route:
    receiver: oncall
    group_by: [alertname, aws_region]
    group_wait: 10s
    group_interval: 2m
    repeat_interval: 3h
    routes:
      - matchers: ['severity="critical"', 'aws_region=~"us-.*"']
        receiver: hooks
        continue: true
        mute_time_intervals: [nights]
  inhibit_rules:
    - source_matchers: ['severity="critical"']
      target_matchers: ['severity="warning"']
      equal: [deployment]
  mute_time_intervals:
    - name: nights
      time_intervals:
        - times: [{start_time: "22:00", end_time: "24:00"}, {start_time: "00:00", end_time: "06:00"}]
          weekdays: ["monday:friday"]
          location: Europe/Berlin
""")
    env = {"SLACK_URL": SLACK, "HOOK_URL": "https://hooks.example.com/am/s3cr3t-path", "HOOK_SECRET": "hmac-key-123"}
    cfg = load_config(path, env=env).notify
    assert cfg.enabled
    assert [r.name for r in cfg.receivers] == ["oncall", "hooks"]
    assert cfg.receivers[0].urls[0] == SLACK and repr(cfg.receivers[0].urls[0]) == "Secret('***')"
    hook = cfg.receivers[1].webhook
    assert hook.configured and hook.headers == {"X-Team": "ml"} and hook.hmac_secret == "hmac-key-123"
    assert cfg.receivers[1].send_resolved is False
    assert isinstance(cfg.route, RouteConfig)
    assert cfg.route.group_wait == 10 and cfg.route.group_interval == 120 and cfg.route.repeat_interval == 3 * 3600
    child = cfg.route.routes[0]
    assert child.continue_ is True and child.receiver == "hooks" and child.mute_time_intervals == ["nights"]
    assert cfg.inhibit_rules[0].equal == ["deployment"]


def test_msteams_is_refused_pointing_to_workflows() -> None:
    token = "a1b2c3d4e5f6/0123456789abcdef/deadbeefcafebabe"
    for url in (f"msteams://{token}", TEAMS_OLD):
        exc = error({"receivers": [{"name": "teams", "urls": [url]}]})
        assert exc.key_path == "notify.receivers[0].urls[0]"
        assert "workflows://" in str(exc) and "retired" in str(exc)
        assert token not in str(exc) and "0f9e8d7c6b5a" not in str(exc)


def test_invalid_apprise_url_names_scheme_not_url() -> None:
    exc = error({"receivers": [{"name": "x", "urls": ["slack://only-one-secret-token-abc"]}]})
    assert exc.key_path == "notify.receivers[0].urls[0]"
    assert "slack://" in str(exc) and "only-one-secret-token-abc" not in str(exc)
    exc = error({"receivers": [{"name": "x", "urls": ["nosuchscheme://secret-value-xyz"]}]})
    assert "secret-value-xyz" not in str(exc)


def test_route_errors_name_the_key_path() -> None:
    base = {"receivers": [{"name": "a", "urls": [SLACK]}, {"name": "b", "urls": ["json://127.0.0.1:1/x"]}]}
    assert error(base).key_path == "notify.route"  # two receivers need a route
    exc = error({**base, "route": {"receiver": "a", "routes": [{"receiver": "nope"}]}})
    assert exc.key_path == "notify.route.routes[0].receiver" and "'a', 'b'" not in str(exc) and "a, b" in str(exc)
    exc = error({**base, "route": {"receiver": "a", "routes": [{"matchers": ["severity=~("]}]}})
    assert exc.key_path == "notify.route.routes[0].matchers[0]"
    exc = error({**base, "route": {"receiver": "a", "routes": [{"continue_": True}]}})
    assert "continue" in str(exc)
    exc = error({**base, "route": {"receiver": "a", "routes": [{"contineu": True}]}})
    assert exc.key_path == "notify.route.routes[0].contineu" and "continue," in str(exc)
    exc = error({**base, "route": {"receiver": "a", "matchers": ["a=b"]}})
    assert exc.key_path == "notify.route.matchers"
    exc = error({**base, "route": {"receiver": "a", "mute_time_intervals": ["nights"]}})
    assert exc.key_path == "notify.route.mute_time_intervals[0]"


def test_receiver_errors() -> None:
    assert error({"receivers": [{"name": "a"}]}).key_path == "notify.receivers[0]"
    assert error({"receivers": [{"urls": [SLACK]}]}).key_path == "notify.receivers[0].name"
    exc = error({"receivers": [{"name": "a", "urls": [SLACK]}, {"name": "a", "urls": [SLACK]}]})
    assert exc.key_path == "notify.receivers[1].name"
    exc = error({"receivers": [{"name": "a", "webhook": {"url": "ftp://x/y"}}]})
    assert exc.key_path == "notify.receivers[0].webhook.url"
    exc = error({"receivers": [{"name": "a", "webhook": {"hmac_secret": "k3y-value-secret"}}]})
    assert exc.key_path == "notify.receivers[0].webhook.url" and "k3y-value-secret" not in str(exc)
    exc = error({"receivers": [{"name": "a", "urls": [SLACK], "sendresolved": True}]})
    assert exc.key_path == "notify.receivers[0].sendresolved" and "send_resolved" in str(exc)


def test_time_interval_errors() -> None:
    def interval(spec: dict) -> ConfigError:
        return error({"receivers": [{"name": "a", "urls": [SLACK]}],
                      "mute_time_intervals": [{"name": "n", "time_intervals": [spec]}]})

    assert interval({"weekdays": ["funday"]}).key_path == "notify.mute_time_intervals[0].time_intervals[0].weekdays[0]"
    exc = interval({"times": [{"start_time": "25:00", "end_time": "26:00"}]})
    assert exc.key_path.endswith("times[0].start_time")
    assert interval({"times": [{"start_time": "10:00", "end_time": "09:00"}]}).key_path.endswith("times[0]")
    assert interval({"location": "Mars/Olympus"}).key_path.endswith("location")
    assert interval({"months": ["smarch"]}).key_path.endswith("months[0]")
    assert interval({"days_of_month": ["0"]}).key_path.endswith("days_of_month[0]")


def test_missing_env_names_the_key() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"notify": {"receivers": [{"name": "a", "urls": ["${NOPE_SLACK_URL}"]}]}}, env={})
    assert info.value.key_path == "notify.receivers[0].urls[0]" and "NOPE_SLACK_URL" in str(info.value)


def test_mask_url() -> None:
    assert mask_url(SLACK) == "slack://***"
    assert mask_url("https://user:pw@hooks.example.com:8443/path/token?x=1") == "https://hooks.example.com:8443/***"
    assert mask_url("not a url") == "***"


def test_check_config_lists_receivers_masked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from agent import cli

    path = tmp_path / "gw.yaml"
    path.write_text(f"""
state_dir: {tmp_path / "state"}
attribution: {{ecs_metadata: false}}
notify:
  receivers:
    - name: oncall
      urls: ["{SLACK}"]
      webhook: {{url: "https://hooks.example.com/am/s3cr3t-path-123"}}
""")
    assert cli.main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "notify: 1 receiver(s)" in out
    assert "oncall: slack slack://***, webhook https://hooks.example.com/***" in out
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in out and "s3cr3t-path-123" not in out
    path.write_text("notify:\n  receivers:\n    - name: teams\n      urls: ['msteams://a1b2c3d4e5/f6g7h8']\n")
    assert cli.main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "notify.receivers[0].urls[0]" in err and "workflows://" in err and "a1b2c3d4e5" not in err


def test_documented_example_is_valid() -> None:
    """The config example in docs/notify.md loads as written."""
    import re

    import yaml

    from tests.conftest import ROOT

    text = (ROOT / "docs" / "notify.md").read_text()
    block = re.search(r"```yaml\n(notify:.*?)```", text, re.DOTALL)
    assert block is not None
    env = {"SLACK_ONCALL_URL": SLACK, "TEAMS_WORKFLOW_URL": "workflows://prod-01.westus.logic.azure.com:443/a1b2/sig9",
           "PLATFORM_HOOK_URL": "https://hooks.example.com/am", "PLATFORM_HOOK_TOKEN": "tok-123456",
           "PLATFORM_HOOK_HMAC": "hmac-123456", "DISCORD_FINOPS_URL": "discord://1234567890/abcdefghijklmnop"}
    cfg = parse_config(yaml.safe_load(block.group(1)), env=env).notify
    assert [r.name for r in cfg.receivers] == ["oncall", "platform-webhook", "finops"]
    assert [r.continue_ for r in cfg.route.routes] == [False, True, False]
