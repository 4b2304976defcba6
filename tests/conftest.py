"""Shared fixtures: one moto server per test session (a real HTTP endpoint, as processes and the KMIP
server need), a fresh table prefix and data directory per test."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# Never let a test reach a real AWS account, whatever the developer's environment says.
for _name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_name, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_SESSION_TOKEN="testing",
    AWS_REGION="us-east-1",
    AWS_DEFAULT_REGION="us-east-1",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def aws_endpoint() -> Iterator[str]:
    """A moto server on loopback for the whole session; AWS_ENDPOINT_URL points every client at it."""
    from moto.server import ThreadedMotoServer

    from openkcm.local.durable_moto import atomic_dynamodb_items

    atomic_dynamodb_items()  # DynamoDB's item atomicity, which moto's in-place updates lack
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["AWS_ENDPOINT_URL"] = endpoint
    yield endpoint
    server.stop()


@pytest.fixture
def settings(aws_endpoint: str, tmp_path: Path):
    from openkcm.config import Settings

    return Settings(table_prefix=f"t{uuid.uuid4().hex[:12]}", data_dir=tmp_path / "data")


@pytest.fixture
def runtime(settings):
    """A runtime with its own tables on the session's moto server and a synchronous audit sink."""
    from openkcm.ops.runtime import build_runtime

    rt = build_runtime(settings, create=True)
    yield rt
    rt.close()


@pytest.fixture
def tenant_factory(runtime):
    """Create Ready, platform-managed tenants: ``tenant_factory("acme")`` -> TenantModel."""
    from openkcm.ops.tenants import create_platform_tenant

    def make(account_id: str = "acme-corp-12345", **kwargs):
        return create_platform_tenant(runtime, account_id, actor="test", source="cli", **kwargs)

    return make
