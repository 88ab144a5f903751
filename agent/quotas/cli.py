"""`gatewatch quotas show [--config FILE] [--json]`: per Bedrock deployment, its matched quotas
and their values, or why none matched. Reads Service Quotas once, as the sidecar would."""

from __future__ import annotations

import argparse
import json
from typing import Any


def register(subparsers: Any) -> None:
    quotas = subparsers.add_parser("quotas", help="Bedrock quota headroom",
                                   description="Bedrock quotas per account, region and model.")
    verbs = quotas.add_subparsers(dest="quotas_command", metavar="VERB")
    verbs.required = True
    show = verbs.add_parser("show", help="matched quotas per Bedrock deployment, or why none matched",
                            description="Read Service Quotas for every account/region of the LiteLLM config's "
                                        "Bedrock deployments (with their own credentials) and print, per "
                                        "deployment, the matched quotas and values, or why none matched. "
                                        "Exit 1 when a deployment has no quota.")
    show.add_argument("--config", help="gatewatch config (default: GATEWATCH_CONFIG, else embedded defaults)")
    show.add_argument("--json", action="store_true", help="one JSON document instead of text")
    show.set_defaults(func=cmd_show)


async def collect(config: Any) -> list[dict[str, Any]]:
    from agent.app import GatewatchApp

    config.quotas.enabled = True
    config.prometheus.process_metrics = False
    app = GatewatchApp(config)
    await app.load_catalog()
    service = app.quotas
    assert service is not None  # quotas.enabled was set above
    await service.refresh_limits()
    out = []
    for d in service.plan.deployments:
        matched = service.matches.get(d.deployment) or {}
        out.append({
            "deployment": d.deployment, "model_group": d.model_group, "model": d.ref.invoked if d.ref else d.model,
            "inference": d.ref.inference if d.ref else "", "aws_account": d.aws_account, "aws_region": d.aws_region,
            "credentials": d.credentials.describe(),
            "quotas": {q: {"name": m.name, "code": m.code, "value": m.value} for q, m in matched.items()},
            "reason": "" if matched else (service.why_unmatched(d) or "not read"),
        })
    return out


def cmd_show(args: argparse.Namespace) -> int:
    from agent.config_cli import load_and_run

    rows = load_and_run(args.config, collect)
    if rows is None:
        return 2
    if args.json:
        print(json.dumps({"deployments": rows}, indent=2))
    else:
        if not rows:
            print("no Bedrock deployments in the LiteLLM config")
        for r in rows:
            print(f"{r['deployment']} ({r['model_group']}): {r['model']} [{r['inference'] or '-'}] "
                  f"in {r['aws_account'] or '-'}/{r['aws_region'] or '-'} via {r['credentials']}")
            for quota, m in r["quotas"].items():
                print(f"  {quota}: {m['value']:g}  {m['name']} ({m['code']})")
            if r["reason"]:
                print(f"  no quota: {r['reason']}")
    return 1 if any(r["reason"] for r in rows) else 0
