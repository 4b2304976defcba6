"""The embedded default across real process restarts: acknowledged writes survive SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(data_dir: Path) -> subprocess.Popen:
    stack_file = data_dir / "stack.json"
    stack_file.unlink(missing_ok=True)
    ports = [f"--port={name}={free_port()}" for name in ("kmip", "api", "kmip-health")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "openkcm.cli", "local", "up", "--data-dir", str(data_dir),
         "--moto-port", str(free_port()), "--health-port", str(free_port()), *ports],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while not stack_file.exists():
        if proc.poll() is not None:
            raise AssertionError(f"local up exited early:\n{proc.stdout.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("local up did not come up within 90 s")
        time.sleep(0.2)
    return proc


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "openkcm.cli", *args, "--data-dir", str(data_dir)],
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120,
    )


def _kill_all(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # every process of the stack, no chance to flush anything
    proc.wait(timeout=30)


def test_tenants_and_keys_survive_sigkill_of_the_whole_stack(tmp_path):
    data_dir = tmp_path / "openkcm"
    proc = _start(data_dir)
    try:
        status = _cli(data_dir, "local", "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert json.loads(status.stdout)["healthy"] is True
        created = _cli(data_dir, "tenant", "create", "--account", "acme-corp-12345", "--tenant-id", "tenant-a")
        assert created.returncode == 0, created.stderr
        info = json.loads((data_dir / "stack.json").read_text())
        kms = boto3.client("kms", endpoint_url=info["aws_endpoint"], region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        key_id = kms.create_key()["KeyMetadata"]["KeyId"]  # a non-replayable call: snapshotted
        blob = kms.encrypt(KeyId=key_id, Plaintext=b"survives")["CiphertextBlob"]
    finally:
        _kill_all(proc)

    proc = _start(data_dir)
    try:
        listed = _cli(data_dir, "tenant", "list", "--account", "acme-corp-12345")
        assert listed.returncode == 0, listed.stderr
        tenant = json.loads(listed.stdout.splitlines()[0])
        assert (tenant["tenant_id"], tenant["status"], tenant["current_l2_version"]) == ("tenant-a", "Ready", 1)
        info = json.loads((data_dir / "stack.json").read_text())
        kms = boto3.client("kms", endpoint_url=info["aws_endpoint"], region_name="us-east-1",
                           aws_access_key_id="x", aws_secret_access_key="x")
        assert kms.decrypt(CiphertextBlob=blob)["Plaintext"] == b"survives"
        issued = _cli(data_dir, "pki", "issue", "--tenant", "tenant-a", "--service", "mongodb", "--out",
                      str(tmp_path / "client"))
        assert issued.returncode == 0, issued.stderr
        assert (tmp_path / "client" / "client.pem").exists()
    finally:
        proc.send_signal(signal.SIGINT)  # and a clean Ctrl-C stop works too
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _kill_all(proc)
            raise
    assert proc.returncode == 0


def test_durable_store_compaction_keeps_every_write(tmp_path):
    """Many writes force snapshots (write-then-rename) between journal generations; a torn journal tail
    and a leftover temporary snapshot are ignored."""
    from openkcm.local.durable_moto import DurableMotoServer

    server = DurableMotoServer(tmp_path / "aws", port=0)
    server.store._compact_after = 25
    endpoint = server.start()
    ddb = boto3.client("dynamodb", endpoint_url=endpoint)
    ddb.create_table(
        TableName="t", BillingMode="PAY_PER_REQUEST",
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
    )
    for i in range(60):
        ddb.update_item(TableName="t", Key={"pk": {"S": "counter"}}, UpdateExpression="ADD n :one",
                        ExpressionAttributeValues={":one": {"N": "1"}})
    server.stop()
    assert server.store.generation >= 2
    journal = server.store.journal_path(server.store.generation)
    with open(journal, "a") as handle:
        handle.write('{"m": "POST", "torn')  # a write that was never acknowledged
    (tmp_path / "aws" / "moto-snapshot.tmp").write_bytes(b"half-written")

    again = DurableMotoServer(tmp_path / "aws", port=0)
    endpoint = again.start()
    try:
        item = boto3.client("dynamodb", endpoint_url=endpoint).get_item(TableName="t", Key={"pk": {"S": "counter"}})
        assert item["Item"]["n"]["N"] == "60"  # no update lost, none applied twice
    finally:
        again.stop()
