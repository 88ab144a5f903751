"""`gatewatch` command line: run | check-config | replay | version, plus feature verbs.

Feature modules add their own verbs (rules, silence, notify, cloudwatch) through a
`register(subparsers)` function listed in COMMAND_MODULES, so this file stays small.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import time
from pathlib import Path

from agent import __version__
from agent.config import Config, load_config
from agent.config_cli import load_and_run
from agent.configtypes import ConfigError

# modules that add verbs: each has register(subparsers) -> None
COMMAND_MODULES: list[str] = ["agent.sinks.cloudwatch_cli", "agent.alerts.cli", "agent.rules.cli",
                               "agent.quotas.cli"]


def _setup_logging(level: str, fmt: str = "text") -> None:
    from agent.logsetup import configure

    configure(level, fmt)


def cmd_run(args: argparse.Namespace) -> int:
    from agent.app import serve

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"gatewatch: bad config: {exc}", file=sys.stderr)
        return 2
    _setup_logging(config.log_level, config.log_format)
    from agent.sqlitedb import StorageError, check_state_dir

    try:
        check_state_dir(config.state_dir)
        asyncio.run(serve(config, host=args.host, port=args.port, reload_config=lambda: load_config(args.config)))
    except (ConfigError, StorageError) as exc:
        print(f"gatewatch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"gatewatch: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    checks = load_and_run(args.file, _deep_check)
    if checks is None:
        return 1
    print(f"{args.file}: OK")
    for line in checks:
        print(f"  {line}")
    return 0


async def _deep_check(config: Config) -> list[str]:
    """Build the app as `run` would (catalog, rules, receivers) without serving."""
    from agent.app import GatewatchApp

    app = GatewatchApp(config)
    await app.load_catalog()
    lines = [f"catalog: {len(app.catalog)} deployments"]
    for dep in app.catalog:
        lines.append(f"  {dep.id}: account={dep.aws_account or '-'} region={dep.aws_region or '-'}"
                     f" ({dep.attribution or 'not attributed'})")
    for check in app.config_checks:
        lines.extend(check())
    return lines


def cmd_replay(args: argparse.Namespace) -> int:
    from prometheus_client.exposition import generate_latest

    from agent.app import GatewatchApp
    from agent.replay import Progress, ReplayStats, events_from_file

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config.prometheus.process_metrics = False
    app = GatewatchApp(config)
    log_parser = _log_parser()
    stats = ReplayStats()
    paths = [Path(p) for p in args.files]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"error: not a file: {', '.join(missing)}", file=sys.stderr)
        return 2

    async def run() -> None:
        await app.load_catalog()
        for sink in app.pipeline.sinks:
            await sink.start()
        progress = Progress(sum(p.stat().st_size for p in paths))
        for path in paths:
            for batch in events_from_file(path, stats, log_parser):
                app.pipeline.publish(batch)
            progress.advance(path.stat().st_size, path.name)
        progress.close()
        app.pipeline.flush()
        deadline = time.monotonic() + float(app.config.server.shutdown_grace)
        for sink in reversed(app.pipeline.sinks):
            await sink.stop(deadline)

    try:
        asyncio.run(run())
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = generate_latest(app.registry).decode()
    if args.all:
        out = text
    else:
        out = "\n".join(line for line in text.splitlines()
                        if not line.startswith(("python_", "process_", "# HELP python_", "# TYPE python_",
                                                "# HELP process_", "# TYPE process_")))
    sys.stdout.write(out.rstrip("\n") + "\n")
    rejected = sum(stats.rejected.values())
    print(f"# replayed {stats.files} file(s): {stats.events} events, {rejected} rejected"
          + (f" {stats.rejected}" if rejected else ""), file=sys.stderr)
    return 0


def _log_parser():
    try:
        module = importlib.import_module("agent.parse.logs")
    except ModuleNotFoundError:
        return None
    return module.LogParser()


def cmd_version(args: argparse.Namespace) -> int:
    print(f"gatewatch {__version__}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gatewatch", description="Observability and alerting sidecar for LiteLLM.")
    parser.add_argument("--version", action="version", version=f"gatewatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    run = sub.add_parser("run", help="run the sidecar", description="Run the sidecar until SIGTERM.")
    run.add_argument("--config", help="config file (default: $GATEWATCH_CONFIG, else embedded defaults)")
    run.add_argument("--host", help="listen address (default from config: 0.0.0.0)")
    run.add_argument("--port", type=int, help="listen port (default from config: 9464)")
    run.set_defaults(func=cmd_run)

    check = sub.add_parser("check-config", help="validate a config file",
                           description="Validate a config file and what it references; exit 1 on error.")
    check.add_argument("file")
    check.set_defaults(func=cmd_check_config)

    replay = sub.add_parser("replay", help="feed captured callbacks / JSON logs through the pipeline",
                            description="Replay captured generic_api bodies, alert bodies or proxy JSON log "
                                        "files offline and print the resulting metrics.")
    replay.add_argument("files", nargs="+", metavar="FILE")
    replay.add_argument("--config", help="config file (catalog for account/region attribution)")
    replay.add_argument("--all", action="store_true", help="include process and python metrics")
    replay.set_defaults(func=cmd_replay)

    version = sub.add_parser("version", help="print the version", description="Print the version.")
    version.set_defaults(func=cmd_version)

    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
