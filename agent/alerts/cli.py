"""`gatewatch silence add|list|expire` (HTTP to a running sidecar) and `gatewatch notify test RECEIVER`.

The silence verbs talk to the sidecar's API (`--url`, default $GATEWATCH_URL or
http://127.0.0.1:9464; bearer token from $GATEWATCH_TOKEN), because silences live in
its state backend. `notify test` sends a test message with the receivers of a config
file (the environment must hold the secrets it references) or, with `--url`, asks the
running sidecar to send it.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

DEFAULT_URL = "http://127.0.0.1:9464"


class ApiError(Exception):
    pass


def _request(args: argparse.Namespace, method: str, path: str, body: Any = None,
             answer_statuses: tuple[int, ...] = ()) -> Any:
    """Call the sidecar's API; an error status raises ApiError unless listed in answer_statuses."""
    base = (args.url or os.environ.get("GATEWATCH_URL") or DEFAULT_URL).rstrip("/")
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    token = args.token or os.environ.get("GATEWATCH_TOKEN")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            return json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code in answer_statuses:
            return json.loads(exc.read() or b"null")
        try:
            message = json.loads(exc.read()).get("error") or exc.reason
        except (ValueError, AttributeError):
            message = exc.reason
        raise ApiError(f"{exc.code}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ApiError(f"cannot reach gatewatch at {base}: {reason}") from None


def _connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help=f"gatewatch base URL (default $GATEWATCH_URL or {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token (default $GATEWATCH_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds (default 10)")


def cmd_silence_add(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"matchers": args.matchers, "createdBy": args.author, "comment": args.comment or ""}
    if args.end:
        body["endsAt"] = args.end
    else:
        body["duration"] = args.duration
    if args.start:
        body["startsAt"] = args.start
    try:
        answer = _request(args, "POST", "/api/v1/silences", body)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(answer["silenceID"])
    return 0


def cmd_silence_list(args: argparse.Namespace) -> int:
    query = "" if args.state == "all" else "?" + urllib.parse.urlencode({"state": args.state})
    try:
        items = _request(args, "GET", "/api/v1/silences" + query)
    except ApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(items, indent=2))
        return 0
    if not items:
        print("no silences")
        return 0
    print(f"{'ID':36}  {'STATE':8}  {'ENDS':20}  {'CREATED BY':12}  MATCHERS / COMMENT")
    for s in items:
        matchers = ", ".join(_matcher_text(m) for m in s["matchers"])
        comment = f"  # {s['comment']}" if s.get("comment") else ""
        print(f"{s['id']:36}  {s['status']['state']:8}  {s['endsAt'][:19]:20}  {s['createdBy'][:12]:12}  "
              f"{matchers}{comment}")
    return 0


def _matcher_text(m: dict[str, Any]) -> str:
    op = ("=~" if m.get("isEqual", True) else "!~") if m.get("isRegex") else ("=" if m.get("isEqual", True) else "!=")
    return f"{m['name']}{op}{json.dumps(m['value'])}"


def cmd_silence_expire(args: argparse.Namespace) -> int:
    failed = 0
    for silence_id in args.ids:
        try:
            _request(args, "DELETE", "/api/v1/silences/" + urllib.parse.quote(silence_id, safe=""))
            print(f"expired {silence_id}")
        except ApiError as exc:
            print(f"error: {silence_id}: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


def cmd_notify_test(args: argparse.Namespace) -> int:
    if args.url:
        try:
            answer = _request(args, "POST", "/api/v1/receivers/" + urllib.parse.quote(args.receiver, safe="")
                              + "/test", {}, answer_statuses=(502,))
        except ApiError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        for item in answer["results"]:
            print(f"{item['target']}: {'ok' if item['ok'] else 'FAILED ' + item['error']}")
        return 0 if answer["ok"] else 1
    return _notify_test_local(args)


def _notify_test_local(args: argparse.Namespace) -> int:
    import time

    from agent.alerts.notify import Notifier
    from agent.alerts.service import send_test
    from agent.config import load_config
    from agent.configtypes import ConfigError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    notify = config.notify
    names = [r.name for r in notify.receivers]
    if args.receiver not in names:
        print(f"error: no receiver {args.receiver!r} in the config (have: {', '.join(names) or 'none'})",
              file=sys.stderr)
        return 2

    async def run() -> list:
        notifier = Notifier(notify)
        try:
            return await send_test(notifier, args.receiver, time.time())
        finally:
            await notifier.close()

    results = asyncio.run(run())
    for masked, result in results:
        print(f"{masked}: {'ok' if result.ok else 'FAILED ' + result.error}")
    return 0 if all(r.ok for _, r in results) else 1


def register(sub: argparse._SubParsersAction) -> None:
    silence = sub.add_parser("silence", help="add, list or expire silences on a running sidecar",
                             description="Manage silences through a running gatewatch's API.")
    verbs = silence.add_subparsers(dest="silence_command", metavar="VERB")
    verbs.required = True

    add = verbs.add_parser("add", help="silence alerts matching all MATCHERS",
                           description='Example: gatewatch silence add alertname=SlowDeployment '
                                       'aws_region=~"eu-.*" --duration 2h --comment "maintenance"')
    add.add_argument("matchers", nargs="+", metavar="MATCHER", help='label matcher: name=value, name!=value, '
                                                                     'name=~regex, name!~regex')
    add.add_argument("--duration", default="1h", help="how long (default 1h)")
    add.add_argument("--start", help="start time, RFC 3339 (default now)")
    add.add_argument("--end", help="end time, RFC 3339 (instead of --duration)")
    add.add_argument("--comment", "-c", help="why")
    add.add_argument("--author", "-a", default=_user(), help="who (default: your user name)")
    _connection_args(add)
    add.set_defaults(func=cmd_silence_add)

    lst = verbs.add_parser("list", help="list silences")
    lst.add_argument("--state", choices=["active", "pending", "expired", "all"], default="all")
    lst.add_argument("--json", action="store_true", help="print the API's JSON")
    _connection_args(lst)
    lst.set_defaults(func=cmd_silence_list)

    expire = verbs.add_parser("expire", help="end silences now")
    expire.add_argument("ids", nargs="+", metavar="ID")
    _connection_args(expire)
    expire.set_defaults(func=cmd_silence_expire)

    notify = sub.add_parser("notify", help="notification tools", description="Notification tools.")
    nverbs = notify.add_subparsers(dest="notify_command", metavar="VERB")
    nverbs.required = True
    test = nverbs.add_parser("test", help="send a test message to a receiver",
                             description="Send a test message to every channel of RECEIVER and report each result.")
    test.add_argument("receiver", metavar="RECEIVER")
    test.add_argument("--config", help="config file (default $GATEWATCH_CONFIG)")
    test.add_argument("--url", help="ask a running sidecar at this URL to send it instead")
    test.add_argument("--token", help="bearer token for --url (default $GATEWATCH_TOKEN)")
    test.add_argument("--timeout", type=float, default=30.0)
    test.set_defaults(func=cmd_notify_test)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
