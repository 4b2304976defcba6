"""``openkcm tenant create|list|show``: operator commands against the configured tables."""

from __future__ import annotations

import argparse
import json

from openkcm.cli.common import add_data_dir, connect
from openkcm.ops.tenants import create_platform_tenant


def register(sub: argparse._SubParsersAction) -> None:
    tenant = sub.add_parser("tenant", help="tenants of an account")
    commands = tenant.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="create a platform-managed tenant")
    add_data_dir(create)
    create.add_argument("--account", required=True)
    create.add_argument("--tenant-id")
    create.add_argument("--name", default="")
    create.add_argument("--region", default="")
    create.set_defaults(func=_create)
    listing = commands.add_parser("list", help="list an account's tenants")
    add_data_dir(listing)
    listing.add_argument("--account", required=True)
    listing.set_defaults(func=_list)


def _summary(tenant: object) -> dict[str, object]:
    fields = ("tenant_id", "account_id", "name", "region", "status", "key_mode", "current_l2_version")
    return {name: getattr(tenant, name) for name in fields}


def _create(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        tenant = create_platform_tenant(
            runtime, args.account, tenant_id=args.tenant_id, name=args.name, region=args.region, actor="cli"
        )
    finally:
        runtime.close()
    print(json.dumps(_summary(tenant), default=str))
    return 0


def _list(args: argparse.Namespace) -> int:
    runtime = connect(args)
    for tenant in runtime.tenants.list_for_account(args.account):
        print(json.dumps(_summary(tenant), default=str))
    return 0
