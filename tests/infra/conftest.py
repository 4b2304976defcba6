"""One CDK synthesis per test session (DECISIONS 17), shared by every infra test.

The app is built exactly as ``cdk synth`` builds it (context from cdk.json plus test overrides), with
the Lambda assets pointed at the source folders (``functions/``) and the web UI at a tiny folder, so no
pip, npm or Docker runs. A second stack in the same app covers the other parameter set: an external
JWT issuer and an existing VPC with an on-prem HSM path (DECISIONS 16).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-central-1"
EXTERNAL = {
    "jwtIssuer": "https://login.example.com/realms/openkcm",
    "jwtAudience": "openkcm-api,openkcm-ui",
    "vpcId": "vpc-0123456789abcdef0",
    "availabilityZones": "eu-central-1a,eu-central-1b",
    "privateSubnetIds": "subnet-0a000000000000001,subnet-0a000000000000002",
    "publicSubnetIds": "subnet-0b000000000000001,subnet-0b000000000000002",
    "vpcCidr": "10.20.0.0/16",
    "hsmCidrs": "192.168.40.0/24",
    "hsmPorts": "1792",
    "kmipAllowedCidrs": "203.0.113.0/24",
    "tablePrefix": "ext",
    "frameAncestors": "",
    "pkcs11Modules": "/var/task/opt/hsm/libvendor.so",
    "apiProvisionedConcurrency": "2",
    "rootKeyVersions": "2",
}


@dataclass
class Synthesized:
    template: dict[str, Any]  # the default stack (Cognito, new VPC)
    external: dict[str, Any]  # external issuer, existing VPC
    stack: Any
    external_stack: Any
    assembly: Any
    seconds: float

    def resources(self, kind: str, template: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
        source = self.template if template is None else template
        return {k: v for k, v in source["Resources"].items() if v["Type"] == kind}


def _kmip_context(tmp: Path) -> Path:
    """A small stand-in for build/kmip-image (what build_assets.sh stages): the real Dockerfile when it
    exists, so synthesis sees its path; staging needs no Docker, only the folder."""
    (tmp / "kmip_fargate").mkdir(parents=True)
    real = REPO / "kmip_fargate" / "Dockerfile"
    (tmp / "kmip_fargate" / "Dockerfile").write_text(real.read_text() if real.is_file() else "FROM scratch\n")
    return tmp


@pytest.fixture(scope="session")
def synth(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    from aws_cdk import Environment

    from infra_cdk.app import build_app, stack_name
    from infra_cdk.config import from_context
    from infra_cdk.stack import OpenKcmStack

    tmp = tmp_path_factory.mktemp("infra")
    web = tmp / "dist"
    web.mkdir()
    (web / "index.html").write_text("<!doctype html><title>OpenKCM</title>")
    kmip_dir = _kmip_context(tmp / "kmip")
    context = dict(json.loads((REPO / "cdk.json").read_text()).get("context", {}))
    context.update(
        {
            "regions": REGION,
            "trustDomain": "kcm.example.com",
            "lambdaAssetRoot": str(REPO / "functions"),
            "kmipImageDir": str(kmip_dir),
            "webDistDir": str(web),
            "frameAncestors": "https://console.example.com",
            "alarmEmail": "ops@example.com",
        }
    )
    started = time.monotonic()
    app = build_app(context, outdir=str(tmp / "cdk.out"))
    external_context = {**context, **EXTERNAL}
    external_config = from_context(lambda key: external_context.get(key))
    external_stack = OpenKcmStack(
        app, "OpenKcm-ext-" + REGION, config=external_config, env=Environment(region=REGION)
    )
    assembly = app.synth()
    seconds = time.monotonic() - started
    stack = app.node.find_child(stack_name("openkcm", REGION))

    def load(name: str) -> dict[str, Any]:
        return json.loads(
            (Path(assembly.directory) / assembly.get_stack_by_name(name).template_file).read_text()
        )

    return Synthesized(
        template=load(stack.stack_name),
        external=load(external_stack.stack_name),
        stack=stack,
        external_stack=external_stack,
        assembly=assembly,
        seconds=seconds,
    )
