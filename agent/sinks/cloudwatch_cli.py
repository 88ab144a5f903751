"""`gatewatch cloudwatch dashboard | alarms | export`: what CloudWatch users deploy.

Both read the same config the sidecar runs with (namespace, dimension sets, region, the
LiteLLM catalog), so the dashboard and alarms match the metrics actually published.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from agent.config import Config, load_config, read_text
from agent.configtypes import ConfigError


def register(subparsers: Any) -> None:
    cloudwatch = subparsers.add_parser("cloudwatch", help="CloudWatch dashboard and alarms",
                                       description="Print a CloudWatch dashboard or alarms for the metrics the "
                                                   "cloudwatch sink publishes.")
    verbs = cloudwatch.add_subparsers(dest="cloudwatch_command", metavar="VERB")
    verbs.required = True

    dashboard = verbs.add_parser("dashboard", help="print the dashboard body JSON",
                                 description="Print a CloudWatch dashboard body (aws cloudwatch put-dashboard "
                                             "--dashboard-body file://...).")
    dashboard.add_argument("--config", help="gatewatch config (namespace, dimension sets, region)")
    dashboard.add_argument("--namespace", help="override cloudwatch.namespace")
    dashboard.add_argument("--region", help="region of the widgets (default: cloudwatch.region, AWS_REGION, "
                                            "us-east-1)")
    dashboard.add_argument("--period", type=int, default=60, help="graph period in seconds (default 60)")
    dashboard.set_defaults(func=cmd_dashboard)

    alarms = verbs.add_parser("alarms", help="print CloudWatch alarms for the rules",
                              description="Print PutMetricAlarm inputs (json) or a CloudFormation template for "
                                          "the rules that map onto the CloudWatch metrics; rules that do not map "
                                          "are listed on stderr with the reason.")
    alarms.add_argument("--config", help="gatewatch config (rules, namespace, dimension sets, LiteLLM catalog)")
    alarms.add_argument("--rules", nargs="+", metavar="PATH", help="rule files, folders or s3:// prefixes "
                                                                   "(default: the config's rules, else the "
                                                                   "default pack)")
    alarms.add_argument("--format", choices=("json", "cloudformation"), default="json")
    alarms.add_argument("--namespace", help="override cloudwatch.namespace")
    alarms.add_argument("--topic-arn", action="append", default=[], metavar="ARN",
                        help="SNS topic for alarm/OK actions (json format; repeatable)")
    alarms.add_argument("--no-catalog", action="store_true",
                        help="do not expand per-deployment alarms from the LiteLLM catalog")
    alarms.set_defaults(func=cmd_alarms)

    export = verbs.add_parser("export", help="write dashboard.json, alarms.json and alarms.cfn.json",
                              description="Write the dashboard body, the alarms (PutMetricAlarm inputs) and the "
                                          "alarms as a CloudFormation template into a folder (the files shipped "
                                          "in dashboards/cloudwatch/ come from this).")
    export.add_argument("directory")
    export.add_argument("--config", help="gatewatch config")
    export.add_argument("--rules", nargs="+", metavar="PATH", help="rule files or folders")
    export.add_argument("--region", help="region of the dashboard widgets")
    export.add_argument("--catalog", action="store_true",
                        help="expand per-deployment alarms from the config's LiteLLM catalog")
    export.set_defaults(func=cmd_export)


def _config(path: str | None) -> Config:
    return load_config(path)


def _region(config: Config, override: str | None) -> str:
    return override or config.cloudwatch.region or os.environ.get("AWS_REGION") \
        or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def cmd_dashboard(args: argparse.Namespace) -> int:
    from agent.sinks.cloudwatch_dashboard import dashboard_body

    try:
        config = _config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    body = dashboard_body(args.namespace or config.cloudwatch.namespace, _region(config, args.region),
                          config.cloudwatch.dimensions, args.period, quotas=config.quotas.enabled)
    print(json.dumps(body, indent=2))
    return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    from agent.rules.exports.cloudwatch import alarms_to_cloudformation, plan_alarms

    try:
        config = _config(args.config)
        groups = load_rule_groups(args.rules, config)
        deployments = None if args.no_catalog else _catalog(config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = plan_alarms(groups, args.namespace or config.cloudwatch.namespace, config.cloudwatch.dimensions,
                       deployments, actions=args.topic_arn)
    for skipped in plan.skipped:
        print(f"skipped {skipped.group}/{skipped.alert}: {skipped.reason}", file=sys.stderr)
    out: Any = alarms_to_cloudformation(plan.alarms) if args.format == "cloudformation" else plan.alarms
    print(json.dumps(out, indent=2))
    print(f"# {len(plan.alarms)} alarms, {len(plan.skipped)} rules skipped", file=sys.stderr)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from agent.rules.exports.cloudwatch import alarms_to_cloudformation, plan_alarms
    from agent.sinks.cloudwatch_dashboard import dashboard_body

    try:
        config = _config(args.config)
        groups = load_rule_groups(args.rules, config)
        deployments = _catalog(config) if args.catalog else None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    cw = config.cloudwatch
    plan = plan_alarms(groups, cw.namespace, cw.dimensions, deployments)
    files = {
        "dashboard.json": dashboard_body(cw.namespace, _region(config, args.region), cw.dimensions,
                                         quotas=config.quotas.enabled),
        "alarms.json": plan.alarms,
        "alarms.cfn.json": alarms_to_cloudformation(plan.alarms),
    }
    out = Path(args.directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (out / name).write_text(json.dumps(content, indent=2) + "\n")
    for skipped in plan.skipped:
        print(f"skipped {skipped.group}/{skipped.alert}: {skipped.reason}", file=sys.stderr)
    print(f"wrote {', '.join(files)} to {out} ({len(plan.alarms)} alarms, {len(plan.skipped)} rules skipped)",
          file=sys.stderr)
    return 0


def _catalog(config: Config) -> list[Any] | None:
    if not config.litellm.config:
        return None
    from agent.enrich import catalog_from_config_text

    location = config.litellm.config
    return list(catalog_from_config_text(read_text(location), source=location))


def load_rule_groups(paths: list[str] | None, config: Config | None = None) -> list[Any]:
    """Validated rule groups through the rule engine's loader (values files applied);
    `paths` None = the config's `rules:`, else the default pack."""
    from agent.rules.loader import load_rule_set
    from agent.rules.model import RuleSetError

    engine = getattr(config, "rule_engine", None) if config is not None else None
    values = list(getattr(engine, "values", []) or [])
    locations = paths if paths else (config.rules if config is not None else None)
    try:
        return load_rule_set(locations, values).groups
    except RuleSetError as exc:
        raise ConfigError("rules", "; ".join(str(e) for e in exc.errors[:5])
                          + (f" (+{len(exc.errors) - 5} more)" if len(exc.errors) > 5 else "")) from None
