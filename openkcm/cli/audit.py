"""``openkcm audit verify|report|checkpoint|archive|ingest-log``: the audit trail from the command line."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime
from pathlib import Path

from openkcm.cli.common import add_data_dir, connect
from openkcm.ops import audit


def iso_time(text: str) -> datetime:
    """An ISO 8601 date or time (``2024-05-01``, ``2024-05-01T12:00:00+00:00``)."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO date or time such as 2024-05-01, got {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser("audit", help="verify the audit trail, checkpoint, archive, compliance report")
    commands = group.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="verify a tenant's chain, checkpoints and archive")
    add_data_dir(verify)
    verify.add_argument("--tenant", required=True)
    verify.add_argument("--json", action="store_true", help="print the full result as JSON")
    verify.set_defaults(func=_verify)
    report = commands.add_parser("report", help="compliance report of a tenant for a period")
    add_data_dir(report)
    report.add_argument("--tenant", required=True)
    report.add_argument("--from", dest="since", required=True, help="first day (YYYY-MM-DD) or ISO time")
    report.add_argument("--to", dest="until", required=True, help="last day (included) or ISO time")
    report.add_argument("--format", choices=("json", "html"), default="json")
    report.add_argument("--out", type=Path, help="write to this file instead of stdout")
    report.set_defaults(func=_report)
    checkpoint = commands.add_parser("checkpoint", help="sign the current chain heads (one tenant or all)")
    add_data_dir(checkpoint)
    checkpoint.add_argument("--tenant")
    checkpoint.set_defaults(func=_checkpoint)
    archive = commands.add_parser("archive", help="archive a tenant's checkpointed records older than a day")
    add_data_dir(archive)
    archive.add_argument("--tenant", required=True)
    archive.add_argument("--before", type=iso_time, help="ISO time; default: now minus the retention period")
    archive.set_defaults(func=_archive)
    ingest = commands.add_parser(
        "ingest-log",
        help="chain the audit records a Lambda could not store and logged instead (audit_record_unstored)",
    )
    add_data_dir(ingest)
    ingest.add_argument("log", help="a log file or export (CloudWatch Logs lines, JSON or not); - for stdin")
    ingest.set_defaults(func=_ingest)


def _verify(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        result = audit.verify_tenant(runtime, args.tenant)
    finally:
        runtime.close()
    print(json.dumps(result, indent=2) if args.json else result["message"])
    return 0 if result["intact"] else 1


def _report(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        report = audit.compliance_report(runtime, args.tenant, args.since, args.until, fmt=args.format)
    finally:
        runtime.close()
    text = report if isinstance(report, str) else json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        print(f"report written to {args.out}", file=sys.stderr)
    else:
        print(text)
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        if args.tenant:
            result = audit.checkpoint_tenant(runtime, args.tenant) or {
                "tenant_id": args.tenant,
                "checkpoint": None,
            }
        else:
            result = audit.checkpoint_all(runtime)
    finally:
        runtime.close()
    print(json.dumps(result, default=str))
    return 0


def _archive(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        result = audit.archive(runtime, args.tenant, before=args.before)
    finally:
        runtime.close()
    print(json.dumps(result, default=str))
    return 0


def _ingest(args: argparse.Namespace) -> int:
    runtime = connect(args)
    try:
        if args.log == "-":
            result = audit.ingest_unstored(runtime, sys.stdin)
        else:
            with open(args.log, encoding="utf-8", errors="replace") as lines:
                result = audit.ingest_unstored(runtime, lines)
    finally:
        runtime.close()
    print(json.dumps(result))
    return 1 if result["unreadable"] else 0
