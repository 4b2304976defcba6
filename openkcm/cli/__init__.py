"""The ``openkcm`` command. Each command group lives in its own module and registers a subparser."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from openkcm.cli import audit, kmip, local, marketplace, pki, rotate, tenant
from openkcm.errors import OpenKCMError

GROUPS = (audit, kmip, local, marketplace, pki, rotate, tenant)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="openkcm", description="OpenKCM key chain manager")
    sub = parser.add_subparsers(dest="group", required=True)
    for group in GROUPS:
        group.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OpenKCMError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
