"""Fixtures of the keystore tests: a SoftHSM2 token initialised by the tests in a temporary directory,
KMS keys in the session's moto server, and runtimes whose settings allow the SoftHSM module."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from collections.abc import Iterator

import pytest

SO_PIN = "so-" + secrets.token_hex(6)
USER_PIN = "pin-" + secrets.token_hex(8)  # random, so a scan for it cannot match by accident
OTHER_PIN = "pin-" + secrets.token_hex(8)
TOKEN = "openkcm-hyok"
OTHER_TOKEN = "openkcm-other"
_CANDIDATES = (
    "/usr/lib/softhsm/libsofthsm2.so",
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/local/lib/softhsm/libsofthsm2.so",
)


def softhsm_module() -> str | None:
    return next((path for path in _CANDIDATES if os.path.exists(path)), None)


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Two SoftHSM2 tokens in a private token directory. SoftHSM reads SOFTHSM2_CONF once, when the module
    is first initialised in this process, so the tokens are made (by softhsm2-util) before that."""
    module = softhsm_module()
    if module is None or shutil.which("softhsm2-util") is None:
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2; scripts/bootstrap.sh test does)")
    base = tmp_path_factory.mktemp("softhsm")
    (base / "tokens").mkdir()
    conf = base / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {base / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = str(conf)
    for label, pin in ((TOKEN, USER_PIN), (OTHER_TOKEN, OTHER_PIN)):
        subprocess.run(
            ["softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin],
            check=True,
            capture_output=True,
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
        )
    yield {"module": module, "token": TOKEN, "pin": USER_PIN, "other_token": OTHER_TOKEN, "other_pin": OTHER_PIN}


def hsm_admin(softhsm: dict[str, str], token: str | None = None, pin: str | None = None):
    """A session on the token as the customer's HSM administrator would have (test setup only)."""
    import pkcs11

    lib = pkcs11.lib(softhsm["module"])
    return lib.get_token(token_label=token or softhsm["token"]).open(user_pin=pin or softhsm["pin"], rw=True)


def make_hsm_key(softhsm: dict[str, str], label: str, *, extractable: bool = False, key_id: bytes | None = None) -> None:
    from pkcs11 import Attribute, KeyType

    with hsm_admin(softhsm) as session:
        session.generate_key(
            KeyType.AES,
            256,
            label=label,
            id=key_id or os.urandom(8),
            store=True,
            template={Attribute.EXTRACTABLE: extractable, Attribute.SENSITIVE: True},
        )


def destroy_hsm_key(softhsm: dict[str, str], label: str) -> None:
    from pkcs11 import ObjectClass

    with hsm_admin(softhsm) as session:
        session.get_key(object_class=ObjectClass.SECRET_KEY, label=label).destroy()


@pytest.fixture
def kms(aws_endpoint: str):
    import boto3

    return boto3.client("kms", region_name="us-east-1")


@pytest.fixture
def ks_settings(settings, softhsm_module_path):
    return settings.model_copy(update={"pkcs11_modules": softhsm_module_path or "", "keystore_call_timeout_seconds": 5.0})


@pytest.fixture(scope="session")
def softhsm_module_path() -> str:
    return softhsm_module() or ""


@pytest.fixture
def ks_runtime(ks_settings) -> Iterator:
    from openkcm.ops.runtime import build_runtime

    rt = build_runtime(ks_settings, create=True)
    yield rt
    rt.close()


def raw_items(table_name: str) -> list[dict]:
    """Every item of a table exactly as DynamoDB stores it (for secret scans)."""
    import boto3

    client = boto3.client("dynamodb", region_name="us-east-1")
    items: list[dict] = []
    for page in client.get_paginator("scan").paginate(TableName=table_name):
        items.extend(page["Items"])
    return items
