"""The ``openkcm`` command. Each command group lives in its own module and registers a subparser.

Bad input, a stack that is not running, a port already in use: one line ``error: ...`` on stderr and exit
code 2, never a traceback (argparse's own errors too)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

from botocore.exceptions import BotoCoreError
from pynamodb.exceptions import PynamoDBConnectionError

from openkcm.cli import audit, kmip, local, marketplace, pki, rotate, tenant
from openkcm.errors import OpenKCMError
from openkcm.local.stack import StackError

GROUPS = (audit, kmip, local, marketplace, pki, rotate, tenant)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="openkcm", description="OpenKCM key chain manager")
    sub = parser.add_subparsers(dest="group", required=True)  # subparsers are _Parser too
    for group in GROUPS:
        group.register(sub)
    return parser


def _os_error(exc: OSError) -> str:
    if not exc.strerror:
        return str(exc)
    return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror


def _unreachable(exc: Exception) -> str:
    return f"cannot reach AWS: {exc} (is `openkcm local up` running?)"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OpenKCMError as exc:
        message = exc.message
    except (StackError, ValueError) as exc:
        message = str(exc)
    except OSError as exc:  # FileNotFoundError (no stack has run here), a port in use ...
        message = _os_error(exc)
    except BotoCoreError as exc:  # the endpoint is down, no credentials, no region ...
        message = _unreachable(exc)
    except PynamoDBConnectionError as exc:
        if not isinstance(exc.cause, BotoCoreError):
            raise
        message = _unreachable(exc.cause)
    except KeyboardInterrupt:
        return 130
    print(f"error: {message}", file=sys.stderr)
    return 2
