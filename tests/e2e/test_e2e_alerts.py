"""The default rule pack, fed by a real proxy, fires to a local webhook receiver and resolves.

The alerting phase of the run (scenario.alert_fault / alert_heal) sends slow calls, calls
to a deployment that always fails and a 429 storm, then clears the fault and keeps healthy
traffic flowing. The rules are the shipped ones (rules/*.yml) with shorter windows from a
values file (rules_values.yml), delivered by gatewatch's own notifier as Alertmanager v4
webhooks to a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import pytest
import yaml

from tests.e2e.alerting import EXPECTED_ALERTS, VALUES_FILE, first_seen, notifications
from tests.e2e.scenario import Run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _require_alerting() -> None:
    pytest.importorskip("agent.rules.engine", reason="the rule engine (issue 5) is not in this checkout")
    pytest.importorskip("agent.alerts.service", reason="alert delivery (issue 6) is not in this checkout")


def _summary(run: Run, since: float) -> str:
    assert run.receiver is not None
    rows = [f"  {when - since:6.1f}s {status:8} {labels.get('alertname')} "
            f"{ {k: v for k, v in labels.items() if k != 'alertname'} }"
            for when, status, labels in notifications(run.receiver.received, since)]
    return "notifications received since the alerting phase began:\n" + ("\n".join(rows) or "  (none)")


@pytest.mark.parametrize("alertname", sorted(EXPECTED_ALERTS))
def test_default_rule_fires_then_resolves_after_the_fault_is_cleared(e2e_run: Run, alertname: str) -> None:
    _require_alerting()
    assert "alert_fault" in e2e_run.phases, "the alerting phase did not run"
    labels = EXPECTED_ALERTS[alertname]
    fault_start, _ = e2e_run.phases["alert_fault"]
    heal_start, _ = e2e_run.phases["alert_heal"]
    received = e2e_run.receiver.received
    fired = first_seen(received, alertname, labels, "firing", fault_start)
    assert fired is not None and fired < heal_start, \
        f"{alertname} {labels} did not fire during the fault\n{_summary(e2e_run, fault_start)}"
    resolved = first_seen(received, alertname, labels, "resolved", heal_start)
    assert resolved is not None, \
        f"{alertname} {labels} did not resolve after the fault was cleared\n{_summary(e2e_run, fault_start)}"


def test_firing_notifications_carry_the_rule_labels_and_values(e2e_run: Run) -> None:
    _require_alerting()
    fault_start, _ = e2e_run.phases["alert_fault"]
    heal_start, _ = e2e_run.phases["alert_heal"]
    bodies = [r.json() for r in e2e_run.receiver.received if fault_start <= r.time < heal_start]
    firing = {}
    for body in bodies:
        for alert in (body or {}).get("alerts", []):
            name = alert["labels"].get("alertname")
            if alert["status"] == "firing" and name in EXPECTED_ALERTS and \
                    all(alert["labels"].get(k) == v for k, v in EXPECTED_ALERTS[name].items()):
                firing.setdefault(name, alert)
    assert set(firing) == set(EXPECTED_ALERTS), _summary(e2e_run, fault_start)
    # every failing / throttled call counted: the ratio is all of them
    assert firing["DeploymentErrorRatioHigh"]["value"] == pytest.approx(1.0)
    assert firing["AccountRegionThrottled"]["value"] == pytest.approx(1.0)
    slow_threshold = yaml.safe_load(VALUES_FILE.read_text())["rules"]["DeploymentSlowP95"]["above"]
    assert firing["DeploymentSlowP95"]["value"] > slow_threshold
    for alert in firing.values():
        assert alert["labels"]["severity"] == "warning"
        assert alert["annotations"].get("summary"), alert
        assert alert["labels"]["aws_account"] in alert["annotations"]["summary"], alert


def test_cooldown_alerts_from_the_proxy_logs(e2e_run: Run) -> None:
    """Cooldowns and "No deployments available" exist only in the proxy's logs."""
    _require_alerting()
    pytest.importorskip("agent.parse.logs", reason="the proxy log tailer (issue 3) is not in this checkout")
    start, _ = e2e_run.phases["cooldown"]
    received = e2e_run.receiver.received
    refused = first_seen(received, "ModelGroupAllDeploymentsCooledDown", {"model_group": "gpt-lab"}, "firing", start)
    cooled = first_seen(received, "DeploymentCooledDown",
                        {"deployment": "gpt-lab-acct222-euw1", "aws_account": "222222222222",
                         "aws_region": "eu-west-1"}, "firing", start)
    assert refused is not None and cooled is not None, _summary(e2e_run, start)
