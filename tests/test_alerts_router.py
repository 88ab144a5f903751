"""Router decisions on a controllable clock: grouping, group_wait, group_interval, repeat,
resolve, resolve_timeout, silences, inhibition, routes with continue, mute time intervals."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from agent.alerts.notification import Notification
from agent.alerts.router import Router
from agent.config import parse_config
from tests.notify_support import FakeClock, alert


def make_router(notify: dict[str, Any], clock: FakeClock, silenced_by=None) -> Router:
    notify = {"receivers": [{"name": "team", "urls": ["json://127.0.0.1:9/x"]}], **notify}
    return Router(parse_config({"notify": notify}).notify, clock=clock, silenced_by=silenced_by)


ROUTE = {"receiver": "team", "group_by": ["alertname"], "group_wait": "30s", "group_interval": "5m",
         "repeat_interval": "1h"}


def step(router: Router, clock: FakeClock, seconds: float = 0.0, resend: list | None = None) -> list[Notification]:
    """Advance the clock, let the "rule engine" re-send `resend`, flush what is due and commit it."""
    clock.advance(seconds)
    if resend:
        router.receive(resend)
    out = []
    for plan in router.flush_due(clock()):
        router.commit(plan, clock())
        if plan.notification is not None:
            out.append(plan.notification)
    return out


def test_group_wait_then_one_notification_per_group() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE}, clock)
    t0 = clock()
    router.receive([alert(deployment="dep-a", aws_region="us-east-1", at=t0),
                    alert(deployment="dep-b", aws_region="eu-west-1", at=t0),
                    alert("BudgetExceeded", team="ml", at=t0)])
    assert step(router, clock, 29.9) == []
    notes = step(router, clock, 0.1)
    assert sorted(n.group_labels["alertname"] for n in notes) == ["BudgetExceeded", "SlowDeployment"]
    slow = next(n for n in notes if n.group_labels["alertname"] == "SlowDeployment")
    assert slow.status == "firing"
    assert sorted(a.labels["deployment"] for a in slow.alerts) == ["dep-a", "dep-b"]
    assert slow.common_labels == {"alertname": "SlowDeployment"}


def test_group_by_splits_groups() -> None:
    clock = FakeClock()
    router = make_router({"route": {**ROUTE, "group_by": ["alertname", "aws_region"]}}, clock)
    router.receive([alert(deployment="dep-a", aws_region="us-east-1"),
                    alert(deployment="dep-b", aws_region="us-east-1"),
                    alert(deployment="dep-c", aws_region="eu-west-1")])
    notes = step(router, clock, 30)
    sizes = sorted((n.group_labels["aws_region"], len(n.alerts)) for n in notes)
    assert sizes == [("eu-west-1", 1), ("us-east-1", 2)]


def test_group_by_dots_means_one_group_per_alert() -> None:
    clock = FakeClock()
    router = make_router({"route": {**ROUTE, "group_by": ["..."]}}, clock)
    router.receive([alert(deployment=f"dep-{i}") for i in range(4)])
    notes = step(router, clock, 30)
    assert len(notes) == 4 and all(len(n.alerts) == 1 for n in notes)


def test_group_interval_batches_new_alerts_and_repeat_interval_resends() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE}, clock)
    first_at = clock()
    router.receive([alert(deployment="dep-a", at=first_at)])
    [first] = step(router, clock, 30)
    # the rule engine re-sends firing alerts every evaluation; a new one joins at +40s
    clock.advance(40)
    router.receive([alert(deployment="dep-a", at=first_at), alert(deployment="dep-b", at=clock())])
    assert step(router, clock, 0) == []
    assert step(router, clock, 259) == []  # 30 + 40 + 259 = 329 < 30 + 300
    [second] = step(router, clock, 1)  # group_interval after the first flush
    assert len(second.alerts) == 2 and second.id != first.id
    # unchanged group: nothing at later group_interval flushes until repeat_interval (1h) passed
    sent = []
    both = [alert(deployment="dep-a", at=first_at), alert(deployment="dep-b", at=first_at + 40)]
    for _ in range(12):
        sent += step(router, clock, 300, resend=both)
    assert len(sent) == 1, [n.id for n in sent]
    repeat = sent[0]
    assert {a.labels["deployment"] for a in repeat.alerts} == {"dep-a", "dep-b"}
    assert repeat.id not in (first.id, second.id)


def test_resolve_says_how_long_it_fired_and_clears_the_group() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE}, clock)
    t0 = clock()
    router.receive([alert(deployment="dep-a", at=t0)])
    [firing] = step(router, clock, 30)
    assert firing.status == "firing" and firing.alerts[0].ends_at is None
    clock.advance(700)
    router.receive([alert(deployment="dep-a", state="resolved", at=t0, resolved_at=clock())])
    notes = []
    for _ in range(3):
        notes += step(router, clock, 300)
    assert len(notes) == 1
    resolved = notes[0]
    assert resolved.status == "resolved"
    assert resolved.alerts[0].status == "resolved"
    assert resolved.alerts[0].fired_for() == 730.0  # fired at t0, resolved at t0 + 30 + 700
    assert router.groups == {}
    # it fires again later: a new group, group_wait again, a new firing notification
    router.receive([alert(deployment="dep-a", at=clock())])
    assert step(router, clock, 10) == []
    [again] = step(router, clock, 20)
    assert again.status == "firing"


def test_mixed_group_lists_new_resolved_alongside_firing() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE}, clock)
    t0 = clock()
    router.receive([alert(deployment="dep-a", at=t0), alert(deployment="dep-b", at=t0)])
    step(router, clock, 30)
    router.receive([alert(deployment="dep-b", state="resolved", at=t0, resolved_at=clock())])
    [note] = step(router, clock, 300, resend=[alert(deployment="dep-a", at=t0)])
    assert [(a.labels["deployment"], a.status) for a in note.alerts] == [("dep-a", "firing"), ("dep-b", "resolved")]
    assert note.status == "firing"


def test_send_resolved_false_sends_no_resolve_but_clears_the_log() -> None:
    clock = FakeClock()
    router = make_router({"receivers": [{"name": "team", "urls": ["json://127.0.0.1:9/x"], "send_resolved": False}],
                          "route": ROUTE}, clock)
    t0 = clock()
    router.receive([alert(deployment="dep-a", at=t0)])
    assert len(step(router, clock, 30)) == 1
    router.receive([alert(deployment="dep-a", state="resolved", at=t0, resolved_at=clock())])
    assert step(router, clock, 300) == []
    assert all(not e.firing for e in router.nflog.values())
    router.receive([alert(deployment="dep-a", at=clock())])
    assert len(step(router, clock, 30)) == 1


def test_resolved_alert_never_notified_is_ignored() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE}, clock)
    router.receive([alert(deployment="dep-x", state="resolved", resolved_at=clock())])
    assert router.groups == {}
    # fired and resolved inside group_wait: nobody was told, nobody hears of it
    router.receive([alert(deployment="dep-y")])
    clock.advance(10)
    router.receive([alert(deployment="dep-y", state="resolved", resolved_at=clock())])
    assert step(router, clock, 30) == []


def test_resolve_timeout_resolves_an_alert_that_stopped_being_sent() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE, "resolve_timeout": "2m"}, clock)
    t0 = clock()
    router.receive([alert(deployment="dep-a", at=t0)])
    step(router, clock, 30)
    [note] = step(router, clock, 300)  # not re-sent for 300s > 120s
    assert note.status == "resolved"
    assert note.alerts[0].ends_at == t0 + 120  # last seen + resolve_timeout


def test_silence_mutes_until_it_ends() -> None:
    clock = FakeClock()
    ends = clock() + 400

    def silenced_by(labels, now):
        return ["s1"] if labels.get("deployment") == "dep-a" and now < ends else []

    router = make_router({"route": ROUTE}, clock, silenced_by=silenced_by)
    t0 = clock()
    both = [alert(deployment="dep-a", at=t0), alert(deployment="dep-b", at=t0)]
    router.receive(both)
    [note] = step(router, clock, 30)
    assert [a.labels["deployment"] for a in note.alerts] == ["dep-b"]
    assert step(router, clock, 300, resend=both) == []  # +330: still silenced, nothing new
    [after] = step(router, clock, 300, resend=both)  # +630: the silence ended at +400
    assert sorted(a.labels["deployment"] for a in after.alerts) == ["dep-a", "dep-b"]


def test_inhibition_by_critical_alert_with_equal_labels() -> None:
    clock = FakeClock()
    router = make_router({"route": {**ROUTE, "group_by": ["..."]}, "inhibit_rules": [
        {"source_matchers": ['severity="critical"'], "target_matchers": ['severity="warning"'],
         "equal": ["deployment"]}]}, clock)
    router.receive([alert("DeploymentDown", severity="critical", deployment="dep-a"),
                    alert("SlowDeployment", severity="warning", deployment="dep-a"),
                    alert("SlowDeployment", severity="warning", deployment="dep-b")])
    notes = step(router, clock, 30)
    sent = sorted((n.alerts[0].name, n.alerts[0].labels["deployment"]) for n in notes)
    assert sent == [("DeploymentDown", "dep-a"), ("SlowDeployment", "dep-b")]
    # the source resolves: the inhibited alert is notified at its next flush
    router.receive([alert("DeploymentDown", state="resolved", severity="critical", deployment="dep-a",
                          resolved_at=clock()),
                    alert("SlowDeployment", severity="warning", deployment="dep-a"),
                    alert("SlowDeployment", severity="warning", deployment="dep-b")])
    later = step(router, clock, 300, resend=[alert("SlowDeployment", severity="warning", deployment="dep-a"),
                                             alert("SlowDeployment", severity="warning", deployment="dep-b")])
    assert sorted((n.status, n.alerts[0].name, n.alerts[0].labels["deployment"]) for n in later) == [
        ("firing", "SlowDeployment", "dep-a"), ("resolved", "DeploymentDown", "dep-a")]


def test_routes_match_in_order_and_continue_fans_out() -> None:
    clock = FakeClock()
    receivers = [{"name": n, "urls": ["json://127.0.0.1:9/x"]} for n in ("default", "oncall", "finops", "audit")]
    route = {"receiver": "default", "group_by": ["alertname"], "group_wait": "0s", "routes": [
        {"matchers": ["team=~\"ml|search\""], "receiver": "audit", "continue": True},
        {"matchers": ['severity="critical"'], "receiver": "oncall"},
        {"matchers": ['alertname=~"Budget.*"'], "receiver": "finops"},
    ]}
    router = make_router({"receivers": receivers, "route": route}, clock)
    router.receive([alert("SlowDeployment", severity="critical", team="ml"),
                    alert("BudgetExceeded", severity="critical"),
                    alert("BudgetForecast", severity="info"),
                    alert("Other", severity="info")])
    notes = step(router, clock, 0)
    got = sorted((n.receiver, n.group_labels["alertname"]) for n in notes)
    assert got == [("audit", "SlowDeployment"), ("default", "Other"), ("finops", "BudgetForecast"),
                   ("oncall", "BudgetExceeded"), ("oncall", "SlowDeployment")]


def test_mute_time_interval_holds_notifications_on_weekends() -> None:
    saturday = datetime(2025, 6, 7, 10, 0, tzinfo=UTC).timestamp()
    clock = FakeClock(saturday)
    router = make_router({
        "route": {**ROUTE, "routes": [{"matchers": ['severity="warning"'], "mute_time_intervals": ["weekends"]}]},
        "mute_time_intervals": [{"name": "weekends", "time_intervals": [{"weekdays": ["saturday:sunday"]}]}],
    }, clock)
    t0 = clock()
    alerts = [alert(severity="warning", at=t0), alert("Down", severity="critical", at=t0)]
    router.receive(alerts)
    notes = step(router, clock, 30)
    assert [n.group_labels["alertname"] for n in notes] == ["Down"]
    monday = datetime(2025, 6, 9, 0, 0, tzinfo=UTC).timestamp()
    slow = []
    while clock() < monday + 600:
        slow += [n for n in step(router, clock, 300, resend=alerts) if n.group_labels["alertname"] == "SlowDeployment"]
    assert len(slow) == 1
    assert monday <= slow[0].created_at < monday + 300  # the first flush after the weekend


def test_huge_group_is_truncated_and_counted() -> None:
    clock = FakeClock()
    router = make_router({"route": ROUTE}, clock)
    router.receive([alert(deployment=f"dep-{i:04d}") for i in range(1005)])
    [note] = step(router, clock, 30)
    assert len(note.alerts) == 1000 and note.truncated == 5
    assert router.prune_nflog(clock() + 1) == 1 and router.nflog == {}
