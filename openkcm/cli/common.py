"""Helpers shared by CLI commands: find the data directory and the running local stack's AWS endpoint."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from openkcm.config import Settings
from openkcm.local.stack import StackError, local_environment, read_stack_file, stack_running
from openkcm.ops.runtime import Runtime, build_runtime


def add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("OPENKCM_DATA_DIR", ".openkcm")),
        help="local state directory (default ./.openkcm or $OPENKCM_DATA_DIR)",
    )


def connect(args: argparse.Namespace) -> Runtime:
    """A runtime for a one-shot command. Uses the local stack when one runs in the data directory and
    no AWS endpoint is set explicitly; otherwise the standard AWS settings. A data directory whose stack
    has stopped (or was killed) is an error, never a silent switch to whatever AWS account is configured."""
    data_dir = Path(args.data_dir)
    if "AWS_ENDPOINT_URL" not in os.environ:
        running = stack_running(data_dir)
        if running is False:
            raise StackError(f"the local stack in {data_dir} is not running (start it with `openkcm local up`)")
        if running and not (data_dir / "stack.json").exists():
            raise StackError(f"the local stack in {data_dir} is still starting; try again in a moment")
        if (data_dir / "stack.json").exists():
            info = read_stack_file(data_dir)
            os.environ.update(local_environment(data_dir, info["aws_endpoint"]))
    return build_runtime(Settings(data_dir=Path(args.data_dir).resolve()))
