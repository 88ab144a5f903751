"""Fixtures of the e2e suite: one lab (fake upstream, gatewatch, LiteLLM proxy) and one run of
traffic per session, shared by every e2e test module.

The lab is stopped in a finalizer, so every process ends even when a test fails or the
run is interrupted (procs.stop_all at exit is the last resort). Logs of each process stay
in the session's tmp dir; failing tests print where.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.lab import Lab, LabOptions
from tests.e2e.receiver import WebhookReceiver
from tests.e2e.scenario import Run, drive

MERGE_WINDOW_SECONDS = 15.0  # > LiteLLM's retry backoff on a single-deployment group (~5 s)


@pytest.fixture(scope="session")
def webhook_receiver() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="session")
def e2e_lab(tmp_path_factory: pytest.TempPathFactory, webhook_receiver: WebhookReceiver) -> Iterator[Lab]:
    from tests.e2e.alerting import gatewatch_alerting_config

    extra = gatewatch_alerting_config(webhook_receiver.url)
    options = LabOptions(merge_window=f"{MERGE_WINDOW_SECONDS:g}s", gatewatch_extra=extra)
    lab = Lab(tmp_path_factory.mktemp("e2e-lab"), options)
    try:
        lab.start()
        yield lab
    finally:
        lab.stop()


@pytest.fixture(scope="session")
def e2e_run(e2e_lab: Lab, webhook_receiver: WebhookReceiver) -> Run:
    return drive(e2e_lab, MERGE_WINDOW_SECONDS, webhook_receiver)
