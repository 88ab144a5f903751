"""The default rule pack scored as on-call would, against a real LiteLLM proxy (issue 18).

See tests/e2e/oncall.py for the scenarios and the one time-scale factor. The table it prints
(scenario, expected pages, received pages) is saved next to the lab's logs and, with
GATEWATCH_SCENARIOS_DOC=1, to docs/scenarios.md. Precision and recall must both be 100 %.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.conftest import ROOT
from tests.e2e.oncall import OncallLab, OncallRun, save
from tests.e2e.receiver import WebhookReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

HEADER = """# On-call scenarios: the default rule pack against a real LiteLLM proxy

Output of `pytest tests/e2e/test_e2e_oncall.py` (`GATEWATCH_SCENARIOS_DOC=1` rewrites this file).
A page is a firing notification of one alert at the receiver. Expected pages name the alert and
the labels that locate it; "none" rows are windows where no page is allowed. Traffic that stops
while an alert fires resolves it with a "no data" note (never as if fixed): see docs/notify.md.

"""


@pytest.fixture(scope="module")
def oncall(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OncallRun]:
    receiver = WebhookReceiver().start()
    lab = OncallLab(tmp_path_factory.mktemp("e2e-oncall"), receiver)
    try:
        lab.start_late()
        run = OncallRun(lab, receiver)
        run.run()
        yield run
    finally:
        lab.stop()
        receiver.stop()


def test_default_pack_pages_like_oncall_expects(oncall: OncallRun) -> None:
    score = oncall.score()
    text = oncall.table(score)
    print("\n" + text)
    save(oncall, text)
    if os.environ.get("GATEWATCH_SCENARIOS_DOC"):
        (ROOT / "docs" / "scenarios.md").write_text(HEADER + text + "\n")
    assert not oncall.errors, text
    assert score["precision"] == 1.0 and score["recall"] == 1.0, text
    bad = [s.name for s in oncall.scenarios.values() if not s.ok]
    assert not bad, f"scenarios not as expected: {bad}\n{text}\n(logs: {oncall.lab.workdir})"
