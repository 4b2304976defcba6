#!/usr/bin/env python3
"""CDK app: one OpenKCM stack per region (``cdk.json`` at the repository root runs this file).

    cdk synth  -c regions=eu-central-1,us-east-1 -c trustDomain=kcm.example.com
    cdk deploy --all -c ...

Parameters are CDK context values, listed with their defaults in infra_cdk/config.py and explained in
infra_cdk/README.md. cdk-nag's AwsSolutions checks run on every synthesis; an unsuppressed error fails
it (suppressions live in infra_cdk/nag.py, each with its reason).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:  # `python infra_cdk/app.py` puts infra_cdk/ first, not the repository
    sys.path.insert(0, str(_REPO))
os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

from aws_cdk import App, Aspects, Environment  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from infra_cdk.config import from_context  # noqa: E402
from infra_cdk.stack import OpenKcmStack  # noqa: E402


def stack_name(prefix: str, region: str) -> str:
    return f"OpenKcm-{prefix}-{region}"


def build_app(context: dict[str, Any] | None = None, outdir: str | None = None, nag: bool = True) -> App:
    app = App(context=context or None, outdir=outdir)
    config = from_context(app.node.try_get_context)
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    for region in config.regions:
        OpenKcmStack(
            app,
            stack_name(config.table_prefix, region),
            config=config,
            env=Environment(account=account, region=region),
        )
    if nag:
        Aspects.of(app).add(AwsSolutionsChecks(verbose=True))
    return app


def main() -> None:
    build_app().synth()


if __name__ == "__main__":
    main()
