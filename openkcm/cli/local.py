"""``openkcm local up|status``: run and inspect the embedded default."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from openkcm.cli.common import add_data_dir
from openkcm.local.stack import LocalStack, StackOptions, read_stack_file


def register(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="run OpenKCM on this machine (moto as AWS)")
    commands = local.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the whole stack and wait for Ctrl-C")
    add_data_dir(up)
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--moto-port", type=int, default=4566)
    up.add_argument("--health-port", type=int, default=8470)
    up.add_argument("--port", action="append", default=[], metavar="SERVICE=PORT",
                    help="override a service's port, e.g. --port kmip=15696")
    up.set_defaults(func=_up)
    status = commands.add_parser("status", help="report whether the local stack is healthy")
    add_data_dir(status)
    status.set_defaults(func=_status)
    from openkcm.cli.token import register_local as register_token

    register_token(commands)


def _up(args: argparse.Namespace) -> int:
    ports = {}
    for item in args.port:
        name, _, value = item.partition("=")
        ports[name] = int(value)
    stack = LocalStack(StackOptions(Path(args.data_dir), args.host, args.moto_port, args.health_port, ports))
    try:
        info = stack.up()
        print("OpenKCM local stack is up", flush=True)
        print(f"  data directory : {info['data_dir']}")
        print(f"  AWS (moto)     : {info['aws_endpoint']}  ({info['aws_replayed_calls']} journaled calls replayed)")
        print(f"  health         : {info['health_url']}")
        print(f"  CA certificate : {info['ca_certificate']}")
        for name, details in info["services"].items():
            for key, value in details.items():
                print(f"  {name:<14} : {key} = {value}")
        print("Press Ctrl-C to stop.", flush=True)
        stack.wait()
    finally:
        stack.down()
    return 0


def _status(args: argparse.Namespace) -> int:
    info = read_stack_file(args.data_dir)
    try:
        with urllib.request.urlopen(info["health_url"], timeout=3) as reply:  # noqa: S310 (local URL)
            body = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    except OSError as exc:
        print(f"not running: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0 if body.get("healthy") else 1
