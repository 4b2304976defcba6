"""``openkcm local up|status``: run and inspect the embedded default."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

from openkcm.cli.common import add_data_dir
from openkcm.local.stack import LocalStack, StackOptions, is_loopback, read_stack_file


def service_port(text: str) -> tuple[str, int]:
    """``SERVICE=PORT`` of ``--port``."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected SERVICE=PORT (e.g. kmip=15696), got {text!r}")
    return name, tcp_port(value)


def tcp_port(text: str) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a port is a number 0..65535, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number 0..65535, got {text!r}")
    return port


def register(sub: argparse._SubParsersAction) -> None:
    local = sub.add_parser("local", help="run OpenKCM on this machine (moto as AWS)")
    commands = local.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start the whole stack and wait for Ctrl-C")
    add_data_dir(up)
    up.add_argument("--host", default="127.0.0.1",
                    help="address of the API/UI, KMIP and health listeners (loopback unless --unsafe-expose)")
    up.add_argument("--unsafe-expose", action="store_true",
                    help="allow a --host other than loopback (moto and the sign-in page stay local-only)")
    up.add_argument("--moto-port", type=tcp_port, default=4566, help="the local AWS, always on 127.0.0.1")
    up.add_argument("--health-port", type=tcp_port, default=8470)
    up.add_argument("--port", action="append", default=[], metavar="SERVICE=PORT", type=service_port,
                    help="override a service's port, e.g. --port kmip=15696")
    up.set_defaults(func=_up)
    status = commands.add_parser("status", help="report whether the local stack is healthy")
    add_data_dir(status)
    status.set_defaults(func=_status)
    from openkcm.cli.token import register_local as register_token

    register_token(commands)


def _up(args: argparse.Namespace) -> int:
    ports = dict(args.port)
    stack = LocalStack(StackOptions(Path(args.data_dir), args.host, args.moto_port, args.health_port, ports,
                                    unsafe_expose=args.unsafe_expose))
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
        if args.unsafe_expose and not is_loopback(args.host):
            print(f"WARNING: listening on {args.host} (--unsafe-expose); the sign-in page and AWS stay on "
                  "this machine only", flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        stack.wait()
    finally:
        stack.down()
    return 0


def _status(args: argparse.Namespace) -> int:
    info = read_stack_file(args.data_dir)
    try:
        with urllib.request.urlopen(info["health_url"], timeout=3) as reply:  # a local URL
            body = json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        body = json.loads(exc.read() or b"{}")
    except OSError as exc:
        print(f"not running: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(body, indent=2))
    return 0 if body.get("healthy") else 1
