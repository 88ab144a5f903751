"""Side by side: CPU per event of LiteLLM's own Prometheus logger and of gatewatch.

LiteLLM (1.108.7, its own cached venv: tests/e2e/litellm_venv.py) runs its
`PrometheusLogger` in-process on the fixture payloads: for every StandardLoggingPayload the
kwargs LiteLLM's logging object hands its callbacks are rebuilt (model, litellm_params with
metadata and model_info, start/end/api-call-start/completion-start times, stream,
standard_logging_object, and for failures the exception), then
`async_log_success_event` or `async_log_failure_event` + `async_post_call_failure_hook` is
awaited, as the proxy does. gatewatch gets the same payloads as 100-event JSON bodies:
decode + enrich + request merge + Prometheus sink (the same job, plus JSON decoding that
LiteLLM does not need). Both warm up on one pass (children created), then CPU time
(`time.process_time`) of the timed passes is divided by the events. A second gatewatch
figure is the whole server process through HTTP with every sink on (Prometheus, rules,
every span over OTLP).

    .venv/bin/python -m bench.litellm_side_by_side_bench [--events 3000] [--passes 2]

The worker half of this file runs under LiteLLM's venv python (`--litellm-worker`): it
imports only the standard library at module level.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

COMMAND = ".venv/bin/python -m bench.litellm_side_by_side_bench"


# -- LiteLLM's side (runs in LiteLLM's venv) -------------------------------------------------
def _litellm_calls(items: list[dict]) -> list[tuple[str, tuple, dict | None]]:
    """(kind, args of the logging hook, failure-hook kwargs) per payload, built before timing."""
    import datetime as dt

    import litellm
    from litellm.proxy._types import UserAPIKeyAuth

    exc_types: dict[str, type] = {}

    def exception_for(item: dict) -> Exception:
        info = item.get("error_information") or {}
        name = str(info.get("error_class") or "APIError")
        cls = exc_types.get(name)
        if cls is None:
            cls = exc_types[name] = type(name, (Exception,), {})
        exc = cls(str(info.get("error_message") or item.get("error_str") or ""))
        code = str(info.get("error_code") or "")
        exc.status_code = int(code) if code.isdigit() else 500  # type: ignore[attr-defined]
        exc.llm_provider = info.get("llm_provider") or item.get("custom_llm_provider")  # type: ignore[attr-defined]
        return exc

    def when(value: float | None) -> dt.datetime | None:
        return dt.datetime.fromtimestamp(value) if value else None

    calls = []
    for item in items:
        metadata = dict(item.get("metadata") or {})
        metadata["model_info"] = {"id": item.get("model_id")}
        metadata["model_group"] = item.get("model_group")
        start, end = when(item["startTime"]), when(item["endTime"])
        kwargs = {
            "model": item.get("model"),
            "messages": item.get("messages"),
            "litellm_params": {"metadata": metadata, "custom_llm_provider": item.get("custom_llm_provider"),
                               "api_base": item.get("api_base"), "litellm_call_id": item.get("litellm_call_id")},
            "standard_logging_object": item,
            "start_time": start,
            "end_time": end,
            "api_call_start_time": start,
            "completion_start_time": when(item.get("completionStartTime")),
            "stream": bool(item.get("stream")),
            "response_cost": item.get("response_cost"),
            "litellm_call_id": item.get("litellm_call_id"),
            "call_type": item.get("call_type"),
        }
        if item["status"] == "success":
            response = item.get("response")
            try:
                response_obj = litellm.ModelResponse(**response) if isinstance(response, dict) else None
            except Exception:
                response_obj = None
            calls.append(("success", (kwargs, response_obj, start, end), None))
        else:
            exception = exception_for(item)
            kwargs["exception"] = exception
            key = UserAPIKeyAuth(api_key=metadata.get("user_api_key_hash"),
                                 key_alias=metadata.get("user_api_key_alias"),
                                 team_id=metadata.get("user_api_key_team_id"),
                                 team_alias=metadata.get("user_api_key_team_alias"),
                                 user_id=metadata.get("user_api_key_user_id"),
                                 org_id=metadata.get("user_api_key_org_id"))
            hook = {"request_data": {"model": item.get("model_group") or item.get("model"), "metadata": metadata,
                                     "standard_logging_object": item},
                    "original_exception": exception, "user_api_key_dict": key}
            calls.append(("failure", (kwargs, None, start, end), hook))
    return calls


def litellm_worker(items_path: str, passes: int) -> None:
    import asyncio
    import logging

    import litellm
    from litellm.integrations.prometheus import PrometheusLogger
    from prometheus_client import REGISTRY

    errors = {"n": 0}

    class Count(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors["n"] += 1

    for name in ("LiteLLM", "LiteLLM Proxy", "LiteLLM Router"):
        logging.getLogger(name).addHandler(Count())
    items = json.loads(Path(items_path).read_text())
    calls = _litellm_calls(items)
    logger = PrometheusLogger()

    async def one_pass(kind: str) -> tuple[float, int]:
        n = 0
        started = time.process_time()
        for what, args, hook in calls:
            if what != kind:
                continue
            n += 1
            if what == "success":
                await logger.async_log_success_event(*args)
            else:
                await logger.async_log_failure_event(*args)
                await logger.async_post_call_failure_hook(**hook)
        return time.process_time() - started, n

    async def main() -> dict:
        out: dict = {"version": litellm.__version__ if hasattr(litellm, "__version__") else "", "passes": passes}
        for kind in ("success", "failure"):
            await one_pass(kind)  # warm-up: series created, caches filled
            best = float("inf")
            n = 0
            for _ in range(passes):
                cpu, n = await one_pass(kind)
                best = min(best, cpu)
            out[kind] = {"events": n, "cpu_us": best / n * 1e6 if n else None}
        return out

    result = asyncio.run(main())
    totals: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name.startswith("litellm_") and sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    result["totals"] = totals
    result["errors_logged"] = errors["n"]
    from importlib.metadata import version

    result["version"] = version("litellm")
    print("RESULT " + json.dumps(result))


# -- gatewatch's side ------------------------------------------------------------------------
def gatewatch_cpu(items: list[dict], passes: int) -> float:
    """CPU µs per event: decode + enrich + request merge + Prometheus sink, in-process."""
    import os

    from prometheus_client import CollectorRegistry

    from agent.enrich import Enricher, catalog_from_config_text
    from agent.parse.litellm import decode_body
    from agent.pipeline import Pipeline, RequestTracker
    from agent.selfmetrics import SelfMetrics
    from agent.sinks.prometheus import PrometheusSink
    from bench import support

    os.environ.update({k: v for k, v in support.LAB_ENV.items() if k not in os.environ})
    payloads = support.bodies(items, 100)
    registry = CollectorRegistry()
    metrics = SelfMetrics(registry)
    catalog = catalog_from_config_text((support.FIXTURES / "config.yaml").read_text())
    pipeline = Pipeline(Enricher(catalog, metrics.count_unattributed), RequestTracker(60.0))
    pipeline.add_sink(PrometheusSink(registry, metrics, catalog=catalog))

    def one_pass() -> float:
        started = time.process_time()
        for body in payloads:
            pipeline.publish(decode_body(body).events)
        return time.process_time() - started

    one_pass()
    best = min(one_pass() for _ in range(passes))
    pipeline.flush()
    counted = sum(sample.value for family in registry.collect() for sample in family.samples
                  if sample.name == "litellm_deployment_total_requests_total")
    if counted != (passes + 1) * sum(1 for i in items if i.get("model_id") or i.get("api_base")):
        raise RuntimeError(f"gatewatch counted {counted} attempts for {len(items)} payloads x {passes + 1} passes")
    return best / len(items) * 1e6


def run_litellm(items: list[dict], passes: int, work: Path) -> dict:
    import subprocess

    from tests.e2e.litellm_venv import ensure_litellm_venv, venv_python

    venv = ensure_litellm_venv(log=lambda m: print(m, flush=True))
    path = work / "items.json"
    path.write_text(json.dumps(items))
    from bench import support

    env = support.lab_environ()
    env.pop("PYTHONPATH", None)
    proc = subprocess.run([str(venv_python(venv)), str(Path(__file__).resolve()), "--litellm-worker", str(path),
                           "--passes", str(passes)], capture_output=True, text=True, timeout=1800, env=env,
                          cwd=work, check=False)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"LiteLLM worker failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--litellm-worker", metavar="ITEMS_JSON", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.litellm_worker:
        litellm_worker(args.litellm_worker, args.passes)
        return

    from bench import support
    from bench.ingest_bench import run_once
    from bench.results import record

    support.pin(support.cpus()[0])
    successes = support.events(support.mix("success"), args.events, seed=3)
    failures = support.events([i for i in support.mix("capture") if i["status"] != "success"], args.events // 2,
                              seed=4)
    with support.workdir("side-by-side") as tmp:
        lite = run_litellm(successes + failures, args.passes, Path(tmp))
    if lite["errors_logged"]:
        raise RuntimeError(f"LiteLLM's logger logged {lite['errors_logged']} errors: kwargs not as it expects")
    expected = (args.passes + 1) * len(successes)  # every success pass counts each call once
    counted = lite["totals"].get("litellm_proxy_total_requests_metric_total", 0)
    if counted < expected:
        raise RuntimeError(f"LiteLLM counted {counted} requests, expected {expected}")
    gw_ok = gatewatch_cpu(successes, args.passes)
    gw_failed = gatewatch_cpu(failures, args.passes)
    server = run_once("gatewatch server, all sinks, successes", successes, 100, True, True, 4)
    lite_ok, lite_failed = lite["success"]["cpu_us"], lite["failure"]["cpu_us"]
    print(json.dumps({"litellm": lite, "gatewatch_success_us": gw_ok, "gatewatch_failure_us": gw_failed,
                      "gatewatch_server_success_us": server["cpu_us"]}, indent=1))
    version = lite["version"]
    record(f"LiteLLM {version} PrometheusLogger, CPU per successful call (in-process, same payloads)",
           f"{lite_ok:,.0f} µs (failed call + failure hook: {lite_failed:,.0f} µs)", COMMAND)
    record("gatewatch CPU per successful call: decode + enrich + Prometheus (same job), in-process",
           f"{gw_ok:.1f} µs = {lite_ok / gw_ok:.0f}x below LiteLLM's logger (failed call: {gw_failed:.1f} µs, "
           f"{lite_failed / gw_failed:.0f}x below)", COMMAND, ">= 20x below LiteLLM's logger")
    record("gatewatch CPU per successful call: whole server through HTTP, every sink (prometheus, rules, OTLP)",
           f"{server['cpu_us']:.1f} µs = {lite_ok / server['cpu_us']:.0f}x below LiteLLM's logger", COMMAND,
           ">= 20x below LiteLLM's logger")


if __name__ == "__main__":
    if "--litellm-worker" in sys.argv:
        idx = sys.argv.index("--litellm-worker")
        passes = int(sys.argv[sys.argv.index("--passes") + 1]) if "--passes" in sys.argv else 2
        litellm_worker(sys.argv[idx + 1], passes)
    else:
        main()
