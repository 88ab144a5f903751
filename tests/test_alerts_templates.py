"""Message text: titles, durations, values, runbooks (link or steps), long groups, AM v4 shape."""

from __future__ import annotations

from agent.alerts.notification import AlertItem, Notification, common
from agent.alerts.templates import body, fmt_duration, fmt_value, render, title
from agent.alerts.templates.webhook import webhook_payload
from agent.alerts.timeintervals import TimeIntervalConfig, TimeRangeConfig, compile_interval
from agent.matchers import MatcherError, parse_matcher, parse_matchers

T0 = 1_750_000_000.0


def item(status: str = "firing", deployment: str = "gpt-lab-acct111-use1", ends: float | None = None,
         **annotations: str) -> AlertItem:
    labels = {"alertname": "DeploymentErrors", "severity": "warning", "model_group": "gpt-lab",
              "deployment": deployment, "aws_account": "111111111111", "aws_region": "us-east-1"}
    return AlertItem(status, labels, dict(annotations), starts_at=T0, ends_at=ends, value=0.125,
                     fingerprint=deployment)


def make(alerts: list[AlertItem], group: dict[str, str] | None = None) -> Notification:
    status = "firing" if any(a.status == "firing" for a in alerts) else "resolved"
    return Notification("id1", "oncall", "g", status, group or {"alertname": "DeploymentErrors"},
                        common([a.labels for a in alerts]), common([a.annotations for a in alerts]), alerts, T0)


def test_durations_and_values() -> None:
    assert [fmt_duration(s) for s in (0, 45, 725, 3725, 90061)] == ["0s", "45s", "12m 5s", "1h 2m", "1d 1h 1m"]
    # one formatter with the value-with-unit text (agent.alerts.units): a resolve under 10 s keeps its fraction
    assert [fmt_duration(s) for s in (2.5, 0.25, None, float("nan"), float("inf"))] == ["2.5s", "0.25s", "?", "?", "∞"]
    assert [fmt_value(v) for v in (None, 3.0, 0.125, 25.3456, 123456.0, 0.00001)] == [
        "—", "3", "0.125", "25.3456", "123456", "1e-05"]


def test_titles() -> None:
    assert title(make([item()])) == "[FIRING:1] DeploymentErrors"
    mixed = make([item(), item("resolved", "d2", ends=T0 + 60)], {"alertname": "DeploymentErrors",
                                                                  "aws_region": "us-east-1"})
    assert title(mixed) == "[FIRING:1, RESOLVED:1] DeploymentErrors · us-east-1"
    assert title(make([item("resolved", ends=T0 + 60)])) == "[RESOLVED] DeploymentErrors"


def test_runbook_url_versus_steps() -> None:
    linked = render(make([item(summary="12.5% errors", runbook_url="https://runbooks.example.com/errors")]))
    assert linked.tokens["runbook_slack"] == "<https://runbooks.example.com/errors|Runbook>"
    steps = render(make([item(summary="12.5% errors", runbook="1. Check the upstream.\n2. Fail over.")]))
    assert steps.tokens["runbook_slack"] == "No runbook"
    assert "**Runbook**\n1. Check the upstream.\n2. Fail over." in steps.body
    url_in_runbook = render(make([item(runbook="https://runbooks.example.com/x")]))
    assert url_in_runbook.tokens["runbook_markdown"] == "[Runbook](https://runbooks.example.com/x)"


def test_long_groups_are_capped_and_counted() -> None:
    alerts = [item(deployment=f"dep-{i:02d}") for i in range(14)]
    text = body(make(alerts))
    assert text.count("🔥") == 10 and "… and 4 more" in text
    assert "`deployment=dep-00`" in text and "`deployment=dep-13`" not in text
    assert render(make(alerts)).tokens["deployment"] == "14 different"
    assert render(make(alerts)).tokens["aws_account"] == "111111111111"  # common to all: shown once


def test_resolved_body_and_look() -> None:
    rendered = render(make([item("resolved", ends=T0 + 3725)]))
    assert "resolved after 1h 2m" in rendered.body
    assert rendered.notify_type == "success" and rendered.tokens["severity_color"] == "#2EB67D"
    assert rendered.tokens["card_style"] == "good"
    critical = item()
    critical.labels["severity"] = "critical"
    assert render(make([critical])).tokens["card_style"] == "attention"


def test_webhook_v4_shape() -> None:
    payload = webhook_payload(make([item(), item("resolved", "d2", ends=T0 + 60)]))
    assert set(payload) >= {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                            "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    firing, resolved = payload["alerts"]
    assert firing["endsAt"] == "0001-01-01T00:00:00Z"
    assert resolved["endsAt"] == "2025-06-15T15:07:40Z" and resolved["status"] == "resolved"
    assert resolved["startsAt"] == "2025-06-15T15:06:40Z"


def test_matchers() -> None:
    assert str(parse_matcher('severity = "critical"')) == 'severity="critical"'
    assert parse_matcher("region=~eu-.*").matches({"region": "eu-west-1"})
    assert not parse_matcher("region=~eu-.*").matches({"region": "xeu-west-1"})  # anchored
    assert parse_matcher('team!="ml"').matches({})  # a missing label is ""
    assert parse_matcher("team!~ml|search").matches({"team": "infra"})
    assert [str(m) for m in parse_matchers('{a="x,y", b=~"z"}')] == ['a="x,y"', 'b=~"z"']
    for bad in ("severity", "9x=1", 'a=~"("'):
        try:
            parse_matcher(bad)
        except MatcherError:
            continue
        raise AssertionError(f"{bad!r} should not parse")


def test_time_interval_edges() -> None:
    from datetime import UTC, datetime

    def ts(*args: int) -> float:
        return datetime(*args, tzinfo=UTC).timestamp()

    last_days = compile_interval(TimeIntervalConfig(days_of_month=["-2:-1"]), "x")
    assert last_days.contains(ts(2024, 2, 28, 12)) and last_days.contains(ts(2024, 2, 29, 12))  # leap year
    assert not last_days.contains(ts(2024, 2, 27, 12))
    berlin_night = compile_interval(TimeIntervalConfig(times=[TimeRangeConfig("22:00", "24:00")],
                                                       location="Europe/Berlin"), "x")
    assert berlin_night.contains(ts(2025, 6, 2, 20, 30))  # 22:30 in Berlin (UTC+2)
    assert not berlin_night.contains(ts(2025, 6, 2, 22, 30))  # 00:30 next day in Berlin
    q1 = compile_interval(TimeIntervalConfig(months=["january:march"], years=["2025"]), "x")
    assert q1.contains(ts(2025, 2, 1)) and not q1.contains(ts(2025, 4, 1)) and not q1.contains(ts(2026, 2, 1))
