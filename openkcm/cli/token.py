"""``openkcm local token``: mint a bearer token from the local stack's OIDC issuer for curl and the UI.

    openkcm local token --account acme-corp-12345 --role account-admin [--role auditor] [--mfa]
    curl -H "Authorization: Bearer $(openkcm local token --account acme-corp-12345 --role auditor)" \\
         http://127.0.0.1:8080/v1/accounts/acme-corp-12345/tenants
"""

from __future__ import annotations

import argparse
from pathlib import Path

from openkcm.cli.common import add_data_dir
from openkcm.local.oidc import DEFAULT_TTL, ROLES, LocalIssuer
from openkcm.local.stack import read_stack_file


def register_local(commands: argparse._SubParsersAction) -> None:
    """Add ``token`` to the ``openkcm local`` command group."""
    token = commands.add_parser("token", help="mint a bearer token from the local OIDC issuer")
    add_data_dir(token)
    token.add_argument("--account", default="", help="the openkcm:account claim (empty only for an operator)")
    token.add_argument("--role", action="append", choices=ROLES, required=True, help="repeat for several roles")
    token.add_argument("--mfa", action="store_true", help="add 'mfa' to amr (needed for HYOK keystore changes)")
    token.add_argument("--sub", default="", help="subject (default: local-<first role>)")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL, help="lifetime in seconds (60..43200)")
    token.add_argument("--issuer", default="", help="issuer URL (default: the running stack's)")
    token.set_defaults(func=_token)


def _token(args: argparse.Namespace) -> int:
    issuer = args.issuer
    if not issuer:
        info = read_stack_file(Path(args.data_dir))
        api = info.get("services", {}).get("api")
        if not api or "issuer" not in api:
            raise FileNotFoundError("the local stack has no api service; start it with `openkcm local up`")
        issuer = api["issuer"]
    local = LocalIssuer(Path(args.data_dir).resolve(), issuer)
    print(local.mint(subject=args.sub or f"local-{args.role[0]}", account=args.account, roles=list(args.role),
                     mfa=args.mfa, ttl=args.ttl))
    return 0
