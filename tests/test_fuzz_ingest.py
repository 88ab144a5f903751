"""Fuzz the ingest routes of a real `gatewatch run` process with mutated real captures.

For any input: no 5xx (503 only as the in-flight cap's answer), the process stays alive,
/metrics parses with prometheus_client's parser and passes `promtool check metrics`, and
what the routes answered as accepted is what the pipeline's sinks took (none failed).

`make test` runs GATEWATCH_FUZZ_EXAMPLES bodies (default 2,000, about a minute, two on a busy
machine); `make fuzz` runs 20,000. With GATEWATCH_FUZZ_REPORT=path the figures are
written there as JSON (bench/README.md quotes them).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, Phase, given, settings

from tests.conftest import ROOT, free_port
from tests.fuzz_support import Body, Tally, bodies
from tests.promtext import samples, total

EXAMPLES = int(os.environ.get("GATEWATCH_FUZZ_EXAMPLES", "2000"))
pytestmark = pytest.mark.slow


class Sidecar:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "gw.yaml"
        config.write_text(json.dumps({"state_dir": str(tmp / "state"), "log_level": "error",
                                      "litellm": {"config": str(ROOT / "tests/fixtures/litellm/config.yaml")},
                                      "attribution": {"ecs_metadata": False}}))
        self.log = (tmp / "gatewatch.log").open("w")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "GATEWATCH_"))}
        from tests.conftest import lab_env

        env.update(lab_env())
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config", str(config), "--host",
                                      "127.0.0.1", "--port", str(self.port)], cwd=ROOT, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.session = requests.Session()
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, "gatewatch exited at start"
            try:
                if self.session.get(self.url + "/readyz", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "gatewatch not ready within 60s"
            time.sleep(0.1)

    def post(self, body: Body) -> tuple[int, object]:
        try:
            # a fresh connection each: a reset one (below) must not be reused for the next body
            response = requests.post(self.url + body.route, data=body.data,
                                     headers={**body.headers, "Connection": "close"}, timeout=60)
        except requests.ConnectionError as exc:
            # a body that is not the gzip its header says is refused (400) as soon as the first chunk
            # fails to inflate; aiohttp then closes the connection, so a client still sending a large
            # body sees the reset before the answer
            return 0, str(exc)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    def metrics(self) -> str:
        response = self.session.get(self.url + "/metrics", timeout=60)
        assert response.status_code == 200
        return response.text

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(60)
        finally:
            self.log.close()


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sidecar]:
    side = Sidecar(tmp_path_factory.mktemp("fuzz"))
    yield side
    if side.proc.poll() is None:
        side.stop()


def test_fuzzed_bodies_never_5xx_and_lose_nothing(sidecar: Sidecar, tmp_path: Path) -> None:
    tally = Tally()
    started = time.monotonic()

    # generate only: a bad answer is recorded with the body's recipe (capture + mutations) and the
    # run goes on, so the figures cover every body; shrinking 20,000 large bodies would take hours
    @settings(max_examples=EXAMPLES, deadline=None, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(body=bodies())
    def post_one(body: Body) -> None:
        status, answer = sidecar.post(body)
        if status == 0 and "gzip-lie" not in body.mutations:
            status = 599  # a reset connection on a body that was not lying about its encoding
        tally.record(body, status, answer)
        assert sidecar.proc.poll() is None, f"gatewatch died on {body.source} {body.mutations}"

    try:
        post_one()
    finally:
        seconds = time.monotonic() - started
    page = sidecar.metrics()
    rows = samples(page)  # prometheus_client's parser
    assert not [n for n, _l, v in rows if math.isnan(v)], "a NaN sample"
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True, text=True)
        assert "error" not in check.stderr.lower(), check.stderr[:2000]
    received = total(rows, "gatewatch_events_received_total", source="callback")
    received_alerts = total(rows, "gatewatch_events_received_total", source="webhook")
    accepted = tally.accepted.get("/v1/litellm/events", 0)
    accepted_alerts = tally.accepted.get("/v1/litellm/alerts", 0)
    handled = {labels["sink"]: v for n, labels, v in rows if n == "gatewatch_sink_events_total"}
    sink_errors = total(rows, "gatewatch_sink_errors_total")
    lost = abs(received - accepted) + abs(received_alerts - accepted_alerts) + sink_errors
    report = {"bodies": tally.bodies, "megabytes": round(tally.bytes / 1e6, 1), "seconds": round(seconds, 1),
              "status": {str(k): v for k, v in sorted(tally.by_status.items())},
              "server_errors_5xx": len(tally.server_errors), "crashes": int(sidecar.proc.poll() is not None),
              "items_accepted": accepted + accepted_alerts, "items_rejected": tally.rejected,
              "items_lost": int(lost), "sink_events": handled, "promtool": bool(promtool)}
    out = os.environ.get("GATEWATCH_FUZZ_REPORT")
    if out:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report))
    assert tally.server_errors == [], tally.server_errors[:20]
    assert received == accepted and received_alerts == accepted_alerts
    assert sink_errors == 0
    assert len(set(handled.values())) == 1, handled  # every sink took every event published
    assert sidecar.stop() == 0  # and it still shuts down cleanly
