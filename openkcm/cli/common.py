"""Helpers shared by CLI commands: find the data directory and the running local stack's AWS endpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from openkcm.config import Settings
from openkcm.local.stack import local_environment, read_stack_file
from openkcm.ops.runtime import Runtime, build_runtime


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("OPENKCM_DATA_DIR", ".openkcm")),
        help="local state directory (default ./.openkcm or $OPENKCM_DATA_DIR)",
    )


def connect(args: argparse.Namespace) -> Runtime:
    """A runtime for a one-shot command. Uses the local stack when one has run in the data directory and
    no AWS endpoint/credentials are set explicitly; otherwise the standard AWS settings."""
    if "AWS_ENDPOINT_URL" not in os.environ and (Path(args.data_dir) / "stack.json").exists():
        info = read_stack_file(args.data_dir)
        os.environ.update(local_environment(Path(args.data_dir), info["aws_endpoint"]))
    return build_runtime(Settings(data_dir=Path(args.data_dir).resolve()))
