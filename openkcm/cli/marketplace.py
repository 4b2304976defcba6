"""``openkcm marketplace send|status|notifications``: play the marketplace against the local stack (a signed
webhook with the local secret), see where a tenant's provisioning stands, and read the notification outbox."""

from __future__ import annotations

import argparse
import json
import time
import urllib.error
import urllib.request
import uuid
from datetime import UTC, datetime
from pathlib import Path

from openkcm.cli.common import add_data_dir, connect
from openkcm.local.stack import read_stack_file
from openkcm.ops import notifications, provisioning

EVENTS = ("service_enabled", "service_disabled", "tenant_created", "tenant_deleted")


def register(sub: argparse._SubParsersAction) -> None:
    market = sub.add_parser("marketplace", help="marketplace events, provisioning status, notifications")
    commands = market.add_subparsers(dest="command", required=True)
    send = commands.add_parser("send", help="POST a signed marketplace event to the local stack's webhook")
    add_data_dir(send)
    send.add_argument("event", choices=EVENTS)
    send.add_argument("--customer", required=True)
    send.add_argument("--tenant", help="the tenant of tenant_created / tenant_deleted")
    send.add_argument("--region", default="eu-west-1")
    send.add_argument("--event-id", default="")
    send.add_argument("--url", default="", help="webhook URL (default: the running local stack's API)")
    send.set_defaults(func=_send)
    status = commands.add_parser("status", help="where a tenant's provisioning stands")
    add_data_dir(status)
    status.add_argument("tenant_id")
    status.set_defaults(func=_status)
    notes = commands.add_parser("notifications", help="an account's notification outbox, newest first")
    add_data_dir(notes)
    notes.add_argument("--account", required=True)
    notes.set_defaults(func=_notifications)


def _send(args: argparse.Namespace) -> int:
    url = args.url
    if not url:
        api = read_stack_file(Path(args.data_dir))["services"].get("api", {}).get("api", "")
        if not api:
            raise FileNotFoundError("the local stack runs no API service; pass --url")
        url = api.rstrip("/") + "/marketplace/events"
    event = {
        "event_id": args.event_id or f"evt-{uuid.uuid4().hex}",
        "event": args.event,
        "customer": args.customer,
        "service": "openkcm",
        "region": args.region,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    }
    if args.tenant:
        event["tenant"] = args.tenant
    body = json.dumps(event).encode()
    runtime = connect(args)
    try:
        header = provisioning.sign(provisioning.webhook_secret(runtime), int(time.time()), body)
    finally:
        runtime.close()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "X-OpenKCM-Signature": header},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as reply:
            print(reply.status, reply.read().decode())
            return 0
    except urllib.error.HTTPError as exc:
        print(exc.code, exc.read().decode())
        return 1


def _status(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        print(json.dumps(provisioning.provisioning_status(args.tenant_id), indent=2))
    finally:
        runtime.close()
    return 0


def _notifications(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        print(notifications.dumps(notifications.list_notifications(runtime, args.account)))
    finally:
        runtime.close()
    return 0
