"""Rotation and CSEK->CMK migration under concurrent KMIP load (issue 6 "done when"): PyKMIP clients over mutual TLS keep doing
Create / Activate / Get / Encrypt / Decrypt against the real KMIP server while the rotation schedule —
a separate runtime, as the rotation Lambda is a separate process — rotates the tenant's L2 key and
re-wraps its objects three times. Zero failed requests; data encrypted before the first rotation still
decrypts after the last, with the same key bytes (re-wrapping never changes L3 material)."""

from __future__ import annotations

import json
import threading
import time

from kmip.core import enums
from kmip.pie.client import ProxyKmipClient

from openkcm.ops import events, provisioning, rotation
from openkcm.ops.runtime import build_runtime
from openkcm.storage import ManagedObjectModel
from tests.kmip.conftest import bundle, kmip_core, kmip_server  # noqa: F401 (fixtures)

from .conftest import marketplace_event

TENANT = "kmip-load-corp"
PARAMS = {
    "block_cipher_mode": enums.BlockCipherMode.CBC,
    "padding_method": enums.PaddingMethod.PKCS5,
    "cryptographic_algorithm": enums.CryptographicAlgorithm.AES,
    "random_iv": True,
}
USAGE = [enums.CryptographicUsageMask.ENCRYPT, enums.CryptographicUsageMask.DECRYPT]


def connect(server, paths) -> ProxyKmipClient:
    client = ProxyKmipClient(
        hostname="127.0.0.1",
        port=server.port,
        cert=str(paths["cert"]),
        key=str(paths["key"]),
        ca=str(paths["ca"]),
        config_file="/dev/null",
        kmip_version=enums.KMIPVersion.KMIP_1_2,
    )
    client.open()
    return client


def test_pykmip_clients_see_zero_failures_across_rotations(runtime, kmip_server, bundle):  # noqa: F811
    provisioning.process_event(runtime, marketplace_event(customer=TENANT))  # provisioned like any tenant
    drop = events.subscribe_keyring(runtime.keyring)  # the local KMIP worker's instant cache drop
    paths = bundle(TENANT, "mongod")
    setup = connect(kmip_server, paths)
    before = {}
    for i in range(4):
        uid = setup.create(
            enums.CryptographicAlgorithm.AES, 256, name=f"pre-{i}", cryptographic_usage_mask=USAGE
        )
        setup.activate(uid)
        data, iv = setup.encrypt(b"written before rotation %d" % i, uid=uid, cryptographic_parameters=PARAMS)
        before[uid] = (setup.get(uid).value, data, iv, b"written before rotation %d" % i)
    setup.close()

    stop = threading.Event()
    failures: list[str] = []
    counts = {"requests": 0}

    def client_loop(seed: int) -> None:
        client = connect(kmip_server, paths)
        try:
            mine = list(before)
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    if n % 5 == 0:
                        uid = client.create(
                            enums.CryptographicAlgorithm.AES,
                            256,
                            name=f"load-{seed}-{n}",
                            cryptographic_usage_mask=USAGE,
                        )
                        client.activate(uid)
                        mine.append(uid)
                        counts["requests"] += 2
                    uid = mine[(n * 3 + seed) % len(mine)]
                    data, iv = client.encrypt(b"payload %d" % n, uid=uid, cryptographic_parameters=PARAMS)
                    plain = client.decrypt(
                        data, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv
                    )
                    if plain != b"payload %d" % n:
                        failures.append(f"round trip mismatch on {uid}")
                    counts["requests"] += 2
                except Exception as exc:  # noqa: BLE001 - every failed request counts
                    failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.002)
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    scheduler = build_runtime(runtime.settings)  # the rotation Lambda's own process state
    try:
        for _ in range(3):
            time.sleep(0.4)
            rotation.rotate_tenant(scheduler, TENANT)  # key_rotation on EventBridge and the in-process bus
            rotation.rewrap_tenant(scheduler, TENANT, batch_size=5)
        time.sleep(0.4)
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        drop()
    assert failures == [] and counts["requests"] > 40

    result = rotation.rewrap_tenant(scheduler, TENANT)
    assert result.complete and result.target_version == 4
    scheduler.close()
    assert {int(i.l2_version) for i in ManagedObjectModel.of_tenant(TENANT)} == {4}
    after = connect(kmip_server, paths)
    try:
        for uid, (key, data, iv, plain) in before.items():
            assert after.get(uid).value == key  # the same L3 key, now sealed under L2 version 4
            assert after.decrypt(data, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv) == plain
    finally:
        after.close()


def test_pykmip_client_sees_zero_failures_across_csek_to_cmk_and_back(runtime, kmip_server, bundle):  # noqa: F811
    import boto3

    from openkcm.ops import keystores

    customer = "kmip-migrating-corp"
    provisioning.process_event(runtime, marketplace_event(customer=customer))
    drop = events.subscribe_keyring(runtime.keyring)
    paths = bundle(customer, "mongod")
    client = connect(kmip_server, paths)
    uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="pre", cryptographic_usage_mask=USAGE)
    client.activate(uid)
    key = client.get(uid).value
    data, iv = client.encrypt(b"written under CSEK", uid=uid, cryptographic_parameters=PARAMS)
    client.close()
    kms_key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]
    store = keystores.create_keystore(
        runtime, customer, "aws-kms", "kms", {"region": "us-east-1"}, {}, "alice"
    )

    stop = threading.Event()
    failures: list[str] = []
    served = {"n": 0}

    def loop() -> None:
        c = connect(kmip_server, paths)
        try:
            while not stop.is_set():
                try:
                    if (
                        c.decrypt(data, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv)
                        != b"written under CSEK"
                    ):
                        failures.append("decrypt mismatch")
                    served["n"] += 1
                except Exception as exc:  # noqa: BLE001 - every failed request counts
                    failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.002)
        finally:
            c.close()

    thread = threading.Thread(target=loop)
    thread.start()
    try:
        time.sleep(0.3)
        [forth] = keystores.link_l1_key(
            runtime, customer, store.keystore_id, kms_key["Arn"], [customer], "alice"
        )
        time.sleep(0.3)
        back = keystores.return_to_platform(runtime, customer, "alice")
        time.sleep(0.3)
    finally:
        stop.set()
        thread.join(15)
        drop()
    assert forth["ok"] and back["ok"] and failures == [] and served["n"] > 20
    after = connect(kmip_server, paths)
    try:
        assert after.get(uid).value == key  # no client change: same object, same key bytes
    finally:
        after.close()


def test_rotation_from_another_process_reaches_the_kmip_server_by_the_epoch(runtime, kmip_server, bundle):  # noqa: F811
    """No shared bus: ``openkcm rotate tenant`` runs as its own process (as the Lambda does); the KMIP server
    learns of it through the DynamoDB epoch within ``epoch_poll_seconds`` and never fails a request."""
    import os
    import subprocess
    import sys

    customer = "kmip-crossproc-corp"
    provisioning.process_event(runtime, marketplace_event(customer=customer))
    paths = bundle(customer, "mongod")
    client = connect(kmip_server, paths)
    uid = client.create(enums.CryptographicAlgorithm.AES, 256, name="pre", cryptographic_usage_mask=USAGE)
    client.activate(uid)
    data, iv = client.encrypt(b"before", uid=uid, cryptographic_parameters=PARAMS)
    env = dict(os.environ, OPENKCM_TABLE_PREFIX=runtime.settings.table_prefix)
    command = [
        sys.executable,
        "-m",
        "openkcm.cli",
        "rotate",
        "tenant",
        customer,
        "--data-dir",
        str(runtime.settings.data_dir),
    ]
    failures: list[str] = []
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        while proc.poll() is None:
            try:
                assert (
                    client.decrypt(data, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv)
                    == b"before"
                )
            except Exception as exc:  # noqa: BLE001 - every failed request counts
                failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.01)
        out = proc.stdout.read() if proc.stdout else b""
    assert proc.returncode == 0, out
    assert json.loads(out)["l2_version"] == 2
    deadline = time.monotonic() + runtime.settings.epoch_poll_seconds + 2
    new_uid = ""
    while time.monotonic() < deadline:  # objects created now land under version 2 once the epoch is seen
        new_uid = client.create(
            enums.CryptographicAlgorithm.AES, 256, name="post", cryptographic_usage_mask=USAGE
        )
        if int(ManagedObjectModel.get(customer, new_uid).l2_version) == 2:
            break
        time.sleep(0.5)
    assert int(ManagedObjectModel.get(customer, new_uid).l2_version) == 2
    assert client.decrypt(data, uid=uid, cryptographic_parameters=PARAMS, iv_counter_nonce=iv) == b"before"
    client.close()
    assert failures == []
