"""AWS KMS as L1 (BYOK) against the moto server; the calls moto lacks (GetParametersForImport,
ImportKeyMaterial) and the errors it never produces (AccessDenied on kms:Decrypt — moto does not
enforce IAM) through botocore's Stubber, which validates every request and reply against the real KMS
API model."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.stub import Stubber
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from openkcm.domain.keystores.aws_kms import AwsKmsConnector
from openkcm.domain.keystores.base import (
    KeystoreAuthenticationFailed,
    KeystoreConfigInvalid,
    KeystoreKeyDisabled,
    KeystoreKeyNotFound,
    KeystoreKeyUnsuitable,
    KeystorePermissionMissing,
    KeystoreTimeout,
    KeystoreUnreachable,
)
from openkcm.errors import IntegrityFailure, KeyUnavailable

CTX = {"tenant_id": "t-acme", "l2_version": "1", "purpose": "openkcm-l2"}
CUSTOMER_ACCOUNT = "111122223333"
ROLE = f"arn:aws:iam::{CUSTOMER_ACCOUNT}:role/OpenKCMAccess"


def connector(key_ref: str | None = None, **config) -> AwsKmsConnector:
    return AwsKmsConnector(
        {"region": "us-east-1", **config}, {}, keystore_id="ks-test", key_ref=key_ref, timeout=5
    )


def test_existing_key_by_arn_and_alias_round_trip(kms):
    arn = kms.create_key(Description="customer L1")["KeyMetadata"]["Arn"]
    alias = f"alias/openkcm-{arn[-8:]}"
    kms.create_alias(AliasName=alias, TargetKeyId=arn)
    for ref in (arn, alias):
        conn = connector(ref)
        conn.test_connection()
        info = conn.check_key()
        assert info.key_id == arn and info.state == "Enabled" and info.algorithm == "SYMMETRIC_DEFAULT"
        l2 = bytes(range(32))
        blob = conn.wrap(l2, CTX)
        assert l2 not in blob
        assert conn.unwrap(blob, CTX) == l2
        assert conn.ref == f"l1:ks-test/{ref}"
    # The encryption context binds tenant and version: another tenant's context does not open the blob.
    with pytest.raises(IntegrityFailure):
        connector(arn).unwrap(blob, {**CTX, "tenant_id": "t-other"})
    keys = connector().list_keys()
    assert any(k.key_id == arn and alias in k.extra["aliases"] for k in keys)


def test_disabled_and_pending_deletion_keys_say_so(kms):
    meta = kms.create_key()["KeyMetadata"]
    arn, key_id = meta["Arn"], meta["KeyId"]
    blob = connector(arn).wrap(b"k" * 32, CTX)
    kms.disable_key(KeyId=key_id)  # moto wants the bare key id here
    with pytest.raises(KeystoreKeyDisabled) as err:
        connector(arn).check_key()
    assert f"KMS key {arn} is Disabled" in err.value.message
    assert "Enable the key" in err.value.fix
    with pytest.raises(KeystoreKeyDisabled):  # unwrap fails closed too (a KeyUnavailable: grace applies)
        connector(arn).unwrap(blob, CTX)
    assert issubclass(KeystoreKeyDisabled, KeyUnavailable)
    kms.enable_key(KeyId=key_id)
    kms.schedule_key_deletion(KeyId=key_id, PendingWindowInDays=7)
    with pytest.raises(KeystoreKeyDisabled) as err:
        connector(arn).check_key()
    assert "PendingDeletion" in err.value.message and "cancel-key-deletion" in err.value.fix


def test_asymmetric_and_missing_keys(kms):
    rsa_arn = kms.create_key(KeySpec="RSA_2048", KeyUsage="ENCRYPT_DECRYPT")["KeyMetadata"]["Arn"]
    with pytest.raises(KeystoreKeyUnsuitable) as err:
        connector(rsa_arn).check_key()
    assert "not symmetric" in err.value.message and "SYMMETRIC_DEFAULT" in err.value.fix
    with pytest.raises(KeystoreKeyNotFound):
        connector("alias/does-not-exist").check_key()
    with pytest.raises(KeystoreConfigInvalid):
        AwsKmsConnector.validate_key_ref("not a key; drop table")


def test_missing_decrypt_permission_names_action_key_and_principal():
    """AWS answers AccessDeniedException with this message shape; the Stubber checks the request against
    the real API model and returns the error exactly as botocore would parse it."""
    arn = f"arn:aws:kms:us-east-1:{CUSTOMER_ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    principal = f"arn:aws:sts::{CUSTOMER_ACCOUNT}:assumed-role/OpenKCMAccess/openkcm-ks-test"
    client = boto3.client("kms", region_name="us-east-1", endpoint_url="https://kms.us-east-1.amazonaws.com")
    stub = Stubber(client)
    meta = {
        "KeyId": arn.rsplit("/", 1)[1],
        "Arn": arn,
        "KeyState": "Enabled",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "Enabled": True,
    }
    stub.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": arn})
    stub.add_client_error(
        "decrypt",
        service_error_code="AccessDeniedException",
        service_message=(
            f"User: {principal} is not authorized to perform: kms:Decrypt on resource: {arn} "
            "because no resource-based policy allows the kms:Decrypt action"
        ),
        http_status_code=400,
    )
    with stub:
        conn = AwsKmsConnector({"region": "us-east-1"}, {}, keystore_id="ks-test", key_ref=arn, client=client)
        with pytest.raises(KeystorePermissionMissing) as err:
            conn.unwrap(b"\x01" * 64, CTX)
    assert err.value.message == f"permission kms:Decrypt missing on {arn} for {principal}"
    assert "allows kms:Decrypt" in err.value.fix and arn in err.value.fix
    assert err.value.to_dict()["details"]["action"] == "kms:Decrypt"


def test_rejected_credentials_are_an_authentication_error():
    client = boto3.client("kms", region_name="us-east-1", endpoint_url="https://kms.us-east-1.amazonaws.com")
    stub = Stubber(client)
    stub.add_client_error(
        "list_aliases",
        "UnrecognizedClientException",
        "The security token included in the request is invalid.",
    )
    with stub, pytest.raises(KeystoreAuthenticationFailed) as err:
        AwsKmsConnector({"region": "us-east-1"}, {}, client=client).test_connection()
    assert "credentials" in err.value.fix


def test_cross_account_role_with_external_id(kms, aws_endpoint):
    sts = boto3.client("sts", region_name="us-east-1")
    creds = sts.assume_role(RoleArn=ROLE, RoleSessionName="customer-admin")["Credentials"]
    customer_kms = boto3.client(
        "kms",
        region_name="us-east-1",
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
    )
    arn = customer_kms.create_key()["KeyMetadata"]["Arn"]
    assert f":{CUSTOMER_ACCOUNT}:" in arn
    conn = AwsKmsConnector(
        {"region": "us-east-1", "role_arn": ROLE},
        {"external_id": "openkcm-acme-7f3a"},
        keystore_id="ks-x",
        key_ref=arn,
    )
    assert conn.check_key().key_id == arn
    assert conn.unwrap(conn.wrap(b"z" * 32, CTX), CTX) == b"z" * 32
    with pytest.raises(KeystoreConfigInvalid):
        AwsKmsConnector({"region": "us-east-1", "role_arn": "arn:aws:iam::1:user/x"}, {})


def test_unreachable_endpoint_and_hanging_endpoint_time_out(monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    monkeypatch.setenv("OPENKCM_KMS_ENDPOINTS_ALLOWED", f"http://127.0.0.1:{closed_port}")  # (tests only)
    conn = connector("alias/x", endpoint_url=f"http://127.0.0.1:{closed_port}")
    with pytest.raises(KeystoreUnreachable):
        conn.test_connection()

    # A server that accepts and never answers: the per-call timeout ends the wait, not the backend.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENKCM_KMS_ENDPOINTS_ALLOWED", f"http://127.0.0.1:{listener.getsockname()[1]}")
    try:
        slow = AwsKmsConnector(
            {"region": "us-east-1", "endpoint_url": f"http://127.0.0.1:{listener.getsockname()[1]}"},
            {},
            key_ref="alias/x",
            timeout=1.0,
        )
        started = time.monotonic()
        with pytest.raises(KeystoreTimeout):
            slow.describe_key()
        assert time.monotonic() - started < 3
    finally:
        stop.set()
        thread.join(2)
        for conn_ in held:
            conn_.close()
        listener.close()


def test_external_origin_import_flow(kms):
    """DECISIONS 5: OpenKCM creates the EXTERNAL-origin key and fetches the import parameters; the customer
    wraps their material with the public key on their side; OpenKCM forwards only the wrapped blob. moto has
    no GetParametersForImport/ImportKeyMaterial, so those two run through the Stubber with the real shapes;
    key creation and later use run on moto."""
    moto_side = AwsKmsConnector({"region": "us-east-1"}, {}, keystore_id="ks-imp")
    created = moto_side.create_import_key("acme L1 (imported)")
    arn = created.key_ref
    assert kms.describe_key(KeyId=arn)["KeyMetadata"]["Origin"] == "EXTERNAL"

    wrapping_key = rsa.generate_private_key(public_exponent=65537, key_size=4096)
    public_der = wrapping_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    token = b"import-token-" + bytes(range(64))
    client = boto3.client("kms", region_name="us-east-1", endpoint_url="https://kms.us-east-1.amazonaws.com")
    stub = Stubber(client)
    stub.add_response(
        "get_parameters_for_import",
        {
            "KeyId": arn,
            "ImportToken": token,
            "PublicKey": public_der,
            "ParametersValidTo": datetime.now(UTC) + timedelta(hours=24),
        },
        {"KeyId": arn, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_4096"},
    )
    with stub:
        importer = AwsKmsConnector(
            {"region": "us-east-1"}, {}, keystore_id="ks-imp", key_ref=arn, client=client
        )
        params = importer.get_import_parameters()
    assert params["key_id"] == arn and base64.b64decode(params["import_token"]) == token

    # The customer's side: their 256-bit material, wrapped with RSAES_OAEP_SHA_256 under the public key.
    customer_public = serialization.load_der_public_key(base64.b64decode(params["public_key"]))
    material = bytes(range(100, 132))
    wrapped = customer_public.encrypt(
        material, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    )
    stub.add_response(
        "import_key_material",
        {"KeyId": arn, "KeyMaterialId": "a" * 64},
        {
            "KeyId": arn,
            "ImportToken": token,
            "EncryptedKeyMaterial": wrapped,
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
        },
    )
    meta = {
        "KeyId": arn.rsplit("/", 1)[1],
        "Arn": arn,
        "KeyState": "Enabled",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "Origin": "EXTERNAL",
        "Enabled": True,
    }
    stub.add_response("describe_key", {"KeyMetadata": meta}, {"KeyId": arn})
    with stub:
        info = importer.import_key_material(params["import_token"], base64.b64encode(wrapped).decode())
    stub.assert_no_pending_responses()  # exactly the wrapped blob and token were forwarded
    assert info.state == "Enabled" and info.origin == "EXTERNAL"
    # What OpenKCM forwarded is only the wrapped blob: it opens with the wrapping private key alone.
    assert (
        wrapping_key.decrypt(
            wrapped, padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        )
        == material
    )

    # Then use it (moto shows EXTERNAL keys as Enabled).
    user = AwsKmsConnector({"region": "us-east-1"}, {}, keystore_id="ks-imp", key_ref=arn)
    assert user.unwrap(user.wrap(b"q" * 32, CTX), CTX) == b"q" * 32
    with pytest.raises(KeystoreConfigInvalid):
        importer.import_key_material("not base64!", "also not")


def test_import_use_cases_through_the_keystore(ks_runtime, monkeypatch):
    """The use cases the API calls (start_key_import / complete_key_import): the stored keystore's connector
    talks to a Stubber-armed client with the real KMS shapes for all three calls."""
    from openkcm.ops import keystores as ks

    arn = f"arn:aws:kms:us-east-1:{CUSTOMER_ACCOUNT}:key/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
    client = boto3.client("kms", region_name="us-east-1", endpoint_url="https://kms.us-east-1.amazonaws.com")
    stub = Stubber(client)
    meta = {
        "KeyId": arn.rsplit("/", 1)[1],
        "Arn": arn,
        "KeyState": "PendingImport",
        "Origin": "EXTERNAL",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "Enabled": False,
    }
    stub.add_response(
        "create_key",
        {"KeyMetadata": meta},
        {
            "Origin": "EXTERNAL",
            "KeySpec": "SYMMETRIC_DEFAULT",
            "KeyUsage": "ENCRYPT_DECRYPT",
            "Description": "acme imported L1",
        },
    )
    public_der = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    stub.add_response(
        "get_parameters_for_import",
        {
            "KeyId": arn,
            "ImportToken": b"token-bytes",
            "PublicKey": public_der,
            "ParametersValidTo": datetime.now(UTC) + timedelta(hours=24),
        },
        {"KeyId": arn, "WrappingAlgorithm": "RSAES_OAEP_SHA_256", "WrappingKeySpec": "RSA_4096"},
    )
    wrapped = bytes(range(256)) * 2
    stub.add_response(
        "import_key_material",
        {"KeyId": arn},
        {
            "KeyId": arn,
            "ImportToken": b"token-bytes",
            "EncryptedKeyMaterial": wrapped,
            "ExpirationModel": "KEY_MATERIAL_DOES_NOT_EXPIRE",
        },
    )
    stub.add_response(
        "describe_key", {"KeyMetadata": {**meta, "KeyState": "Enabled", "Enabled": True}}, {"KeyId": arn}
    )
    monkeypatch.setattr(AwsKmsConnector, "_kms", lambda self: client)
    store = ks.create_keystore(
        ks_runtime, "acme-corp-12345", "aws-kms", "kms", {"region": "us-east-1"}, {}, "alice"
    )
    with stub:
        started = ks.start_key_import(
            ks_runtime, "acme-corp-12345", store.keystore_id, actor="alice", description="acme imported L1"
        )
        assert started["key_ref"] == arn and base64.b64decode(started["public_key"]) == public_der
        done = ks.complete_key_import(
            ks_runtime,
            "acme-corp-12345",
            store.keystore_id,
            arn,
            started["import_token"],
            base64.b64encode(wrapped).decode(),
            actor="alice",
        )
    stub.assert_no_pending_responses()
    assert done["state"] == "Enabled" and done["origin"] == "EXTERNAL"


def test_blobs_open_after_the_customer_repoints_the_alias(kms):
    """AWS's manual rotation: a new key, the alias moved to it. Blobs the old key wrapped carry its ARN
    and still open; new ones go to the new key; a blob pinned to a key of another account does not open."""
    from openkcm.domain.keystores.base import pin, unpin

    old = kms.create_key()["KeyMetadata"]["Arn"]
    kms.create_alias(AliasName="alias/acme-l1", TargetKeyId=old)
    conn = connector("alias/acme-l1")
    before = conn.wrap(b"a" * 32, CTX)
    assert unpin(before)[0] == old
    new = kms.create_key()["KeyMetadata"]["Arn"]
    kms.update_alias(AliasName="alias/acme-l1", TargetKeyId=new)
    assert conn.unwrap(before, CTX) == b"a" * 32
    after = conn.wrap(b"b" * 32, CTX)
    assert unpin(after)[0] == new and conn.unwrap(after, CTX) == b"b" * 32
    foreign = old.replace(old.split(":")[4], "999999999999")
    with pytest.raises(IntegrityFailure):
        conn.unwrap(pin(foreign, unpin(before)[1]), CTX)


def test_a_keystore_gets_no_credentials_of_openkcm_outside_an_emulator(ks_runtime, monkeypatch):
    """Without role_arn or access keys a connector would sign with the process's own AWS identity: any
    account could then use whatever KMS key OpenKCM's role reaches. Only an emulator (AWS_ENDPOINT_URL)
    or an operator's explicit OPENKCM_KMS_AMBIENT_CREDENTIALS allows it."""
    from openkcm.domain.keystores import aws_kms
    from openkcm.ops import keystores as ks

    monkeypatch.delenv("OPENKCM_KMS_AMBIENT_CREDENTIALS", raising=False)
    assert aws_kms.ambient_credentials_allowed()  # the tests' moto endpoint is set
    with monkeypatch.context() as deployed:
        deployed.delenv("AWS_ENDPOINT_URL")
        assert not aws_kms.ambient_credentials_allowed()
        with pytest.raises(KeystoreConfigInvalid) as refused:
            AwsKmsConnector({"region": "us-east-1"}, {})  # builds no client: nothing is sent
        assert refused.value.details["field"] == "role_arn"
        AwsKmsConnector({"region": "us-east-1", "role_arn": "arn:aws:iam::111122223333:role/kms"}, {})
        AwsKmsConnector({"region": "us-east-1"}, {"access_key_id": "AKIAEXAMPLE", "secret_access_key": "s"})
        deployed.setenv("OPENKCM_KMS_AMBIENT_CREDENTIALS", "true")  # a single-customer installation
        AwsKmsConnector({"region": "us-east-1"}, {})
    monkeypatch.setattr(aws_kms, "ambient_credentials_allowed", lambda: False)
    with pytest.raises(KeystoreConfigInvalid):
        ks.create_keystore(
            ks_runtime, "globex-999", "aws-kms", "borrowed", {"region": "us-east-1"}, {}, "mallory"
        )
    assert ks.list_keystores(ks_runtime, "globex-999") == []
    role = {"region": "us-east-1", "role_arn": "arn:aws:iam::111122223333:role/kms"}
    store = ks.create_keystore(ks_runtime, "globex-999", "aws-kms", "own role", role, {}, "mallory")
    with pytest.raises(KeystoreConfigInvalid):  # an update cannot drop the role either
        ks.update_keystore(
            ks_runtime, "globex-999", store.keystore_id, config={"region": "us-east-1"}, actor="m"
        )
    stored = ks.get_keystore(ks_runtime, "globex-999", store.keystore_id).config_json
    assert json.loads(stored) == role
