"""`gatewatch rules check | test | export`.

- check PATH...   validate rule files (folders read at their top level); exit 1 and print
                  `file:line: key.path: reason` for every problem.
- test FILE...    run promtool-style unit tests (see agent/rules/testing.py); exit 1 on failure.
- export          write the rules as Prometheus alerting rules (`--format prometheus`, checked
                  by `promtool check rules`) or CloudWatch alarms (`--format cloudwatch`).
"""

from __future__ import annotations

import argparse
import json
import sys

from agent.rules.model import RuleSetError

DEFAULT_HELP = "rule files or folders (default: the config's `rules:`, else the default pack)"


def register(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser("rules", help="check, test and export alert rule files",
                           description="Check, unit-test and export gatewatch alert rule files.")
    verbs = rules.add_subparsers(dest="rules_command", metavar="VERB")
    verbs.required = True

    check = verbs.add_parser("check", help="validate rule files", description="Validate rule files; exit 1 and "
                             "print file:line: reason for every problem.")
    check.add_argument("paths", nargs="*", metavar="PATH", help=DEFAULT_HELP)
    check.add_argument("--values", action="append", default=[], metavar="FILE",
                       help="values file with threshold overrides (repeatable)")
    check.add_argument("--config", help="gatewatch config: take `rules:` and `rule_engine.values` from it")
    check.set_defaults(func=cmd_check)

    test = verbs.add_parser("test", help="run rule unit tests",
                            description="Run promtool-style rule unit test files; exit 1 if any fails.")
    test.add_argument("files", nargs="+", metavar="FILE")
    test.set_defaults(func=cmd_test)

    export = verbs.add_parser("export", help="export rules as Prometheus rules or CloudWatch alarms",
                              description="Write the rules as Prometheus alerting rules over gatewatch's metrics "
                                          "or as CloudWatch alarm definitions.")
    export.add_argument("paths", nargs="*", metavar="PATH", help=DEFAULT_HELP)
    export.add_argument("--format", choices=("prometheus", "cloudwatch"), default="prometheus")
    export.add_argument("--values", action="append", default=[], metavar="FILE",
                        help="values file with threshold overrides (repeatable)")
    export.add_argument("--config", help="gatewatch config: take `rules:` and `rule_engine.values` from it")
    export.add_argument("--namespace", default=None, help="CloudWatch namespace (cloudwatch format)")
    export.add_argument("--output", "-o", help="write here instead of stdout")
    export.set_defaults(func=cmd_export)


def _locations(args: argparse.Namespace) -> tuple[list[str] | None, list[str]]:
    values = list(args.values)
    if args.paths:
        return list(args.paths), values
    if getattr(args, "config", None):
        from agent.config import load_config

        config = load_config(args.config)
        return config.rules, values + list(config.rule_engine.values)
    return None, values


def _load(args: argparse.Namespace):
    from agent.configtypes import ConfigError
    from agent.rules.loader import load_rule_set

    try:
        locations, values = _locations(args)
        return load_rule_set(locations, values)
    except RuleSetError as exc:
        for error in exc.errors:
            print(str(error), file=sys.stderr)
        print(f"{len(exc.errors)} problem(s) found", file=sys.stderr)
        return None
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _catalog(args: argparse.Namespace) -> list | None:
    """The deployments of the LiteLLM config named by `--config` (litellm.config), if any."""
    if not getattr(args, "config", None):
        return None
    from agent.config import load_config, read_text
    from agent.enrich import catalog_from_config_text

    config = load_config(args.config)
    if not config.litellm.config:
        return None
    return list(catalog_from_config_text(read_text(config.litellm.config), source=config.litellm.config))


def cmd_check(args: argparse.Namespace) -> int:
    rule_set = _load(args)
    if rule_set is None:
        return 1
    by_file: dict[str, int] = {}
    for group in rule_set.groups:
        by_file[group.file] = by_file.get(group.file, 0) + len(group.rules)
    for file in rule_set.files:
        print(f"{file}: OK, {by_file.get(file, 0)} rules")
    print(f"{len(rule_set)} rules in {len(rule_set.groups)} groups")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    from agent.rules.testing import run_files

    return 0 if run_files(args.files) else 1


def cmd_export(args: argparse.Namespace) -> int:
    import yaml

    rule_set = _load(args)
    if rule_set is None:
        return 1
    if args.format == "prometheus":
        from agent.rules.exports.prometheus import export_prometheus

        result = export_prometheus(rule_set)
        text = "# generated by `gatewatch rules export --format prometheus`\n" + yaml.safe_dump(
            {"groups": result.groups}, sort_keys=False, allow_unicode=True, width=1000)
        skipped = [(s.rule, s.reason) for s in result.skipped]
    else:
        from agent.rules.exports.cloudwatch import plan_alarms
        from agent.rules.exports.prometheus import raw_groups

        groups = raw_groups(rule_set)
        kwargs: dict = {"namespace": args.namespace} if args.namespace else {}
        deployments = _catalog(args)
        if deployments is not None:  # percentile and ratio alarms need concrete deployments
            kwargs["deployments"] = deployments
        plan = plan_alarms(groups, **kwargs)
        alarms = plan.alarms
        skipped = [(s.rule, s.reason) for s in plan.skipped]
        text = json.dumps(alarms, indent=2) + "\n"
    if args.output:
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    for rule, reason in skipped:
        print(f"skipped {rule}: {reason}", file=sys.stderr)
    return 0
