"""``openkcm pki issue``: a client certificate for one service of a tenant, signed by the local CA."""

from __future__ import annotations

import argparse
from pathlib import Path

from openkcm.cli.common import add_data_dir, connect
from openkcm.ops.certificates import issue_client_bundle


def register(sub: argparse._SubParsersAction) -> None:
    pki = sub.add_parser("pki", help="certificates of the deployment's CA")
    commands = pki.add_subparsers(dest="command", required=True)
    issue = commands.add_parser("issue", help="issue a client certificate for a tenant's service")
    add_data_dir(issue)
    issue.add_argument("--tenant", required=True)
    issue.add_argument("--service", required=True)
    issue.add_argument("--out", type=Path, required=True)
    issue.set_defaults(func=_issue)


def _issue(args: argparse.Namespace) -> int:
    runtime = connect(args)
    paths = issue_client_bundle(runtime, args.tenant, args.service, args.out, actor="cli")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0
