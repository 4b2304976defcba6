"""``openkcm rotate run|root|shred``: the rotation schedule on demand (same code as the Lambda)."""

from __future__ import annotations

import argparse
import json

from openkcm.cli.common import add_data_dir, connect
from openkcm.ops import rotation


def register(sub: argparse._SubParsersAction) -> None:
    rotate = sub.add_parser("rotate", help="key rotation, re-wrap and crypto-shredding")
    commands = rotate.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="one run of the rotation schedule now")
    add_data_dir(run)
    run.add_argument("--tenant", action="append", help="limit to these tenants (repeatable)")
    run.add_argument("--budget", type=float, default=600.0, help="seconds before stopping (resumable)")
    run.set_defaults(func=_run)
    tenant = commands.add_parser("tenant", help="rotate one tenant's L2 key now and re-wrap its objects")
    add_data_dir(tenant)
    tenant.add_argument("tenant_id")
    tenant.set_defaults(func=_tenant)
    root = commands.add_parser(
        "root", help="rotate the internal root key and re-wrap platform-managed L2 keys"
    )
    add_data_dir(root)
    root.set_defaults(func=_root)


def _run(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        report = rotation.run_schedule(runtime, budget_seconds=args.budget, tenant_ids=args.tenant)
    finally:
        runtime.close()
    print(json.dumps(report.to_dict(), indent=2))
    return 1 if report.errors else 0


def _tenant(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        version = rotation.rotate_tenant(runtime, args.tenant_id, actor="cli")
        result = rotation.rewrap_tenant(runtime, args.tenant_id)
        retired = rotation.retire_unreferenced(runtime, args.tenant_id) if result.complete else []
    finally:
        runtime.close()
    print(
        json.dumps(
            {
                "tenant_id": args.tenant_id,
                "l2_version": version,
                "rewrapped": result.moved,
                "complete": result.complete,
                "retired": retired,
            }
        )
    )
    return 0


def _root(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        result = rotation.rotate_root(runtime, actor="cli")
    finally:
        runtime.close()
    print(json.dumps(result))
    return 0
