"""HYOK over PKCS#11 against a real SoftHSM2 token initialised by the tests."""

from __future__ import annotations

import os

import pytest

from openkcm.domain.keystores.base import (
    KeystoreAuthenticationFailed,
    KeystoreConfigInvalid,
    KeystoreKeyNotFound,
    KeystoreKeyUnsuitable,
    KeystoreUnreachable,
)
from openkcm.domain.keystores.pkcs11 import GCM, KWP, Pkcs11Connector
from openkcm.errors import IntegrityFailure, KeyUnavailable
from tests.keystores.conftest import make_hsm_key

pytestmark = pytest.mark.softhsm
CTX = {"tenant_id": "t-hyok", "l2_version": "3", "purpose": "openkcm-l2"}


def hsm(softhsm, key_ref=None, *, pin=None, token=None, mechanism=None, allowed=None) -> Pkcs11Connector:
    config = {"module_path": softhsm["module"], "token_label": token or softhsm["token"]}
    if mechanism:
        config["mechanism"] = mechanism
    return Pkcs11Connector(
        config,
        {"pin": pin or softhsm["pin"]},
        allowed_modules=allowed if allowed is not None else [softhsm["module"]],
        keystore_id="ks-hsm",
        key_ref=key_ref,
        timeout=5,
    )


@pytest.mark.parametrize("mechanism, tag", [("aes-gcm", GCM), ("aes-key-wrap-pad", KWP), (None, GCM)])
def test_round_trip_by_label_and_id(softhsm, mechanism, tag):
    label = f"l1-{os.urandom(4).hex()}"
    key_id = os.urandom(6)
    make_hsm_key(softhsm, label, key_id=key_id)
    l2 = os.urandom(32)
    by_label = hsm(softhsm, f"label:{label}", mechanism=mechanism)
    by_label.test_connection()
    info = by_label.check_key()
    assert info.algorithm == "AES-256" and info.extra["extractable"] == "false" and info.key_id == key_id.hex()
    blob = by_label.wrap(l2, CTX)
    assert blob[:2] == b"P" + bytes([tag]) and l2 not in blob
    by_id = hsm(softhsm, f"id:{key_id.hex()}", mechanism=mechanism)
    assert by_id.unwrap(blob, CTX) == l2
    assert hsm(softhsm, label).unwrap(blob, CTX) == l2  # a bare label works too
    # Bound to tenant and version: another context, or a flipped bit, does not open.
    with pytest.raises(IntegrityFailure):
        by_id.unwrap(blob, {**CTX, "l2_version": "4"})
    with pytest.raises(IntegrityFailure):
        by_id.unwrap(blob[:-1] + bytes([blob[-1] ^ 1]), CTX)
    assert any(k.key_ref == f"label:{label}" for k in by_label.list_keys())


def test_wrong_pin_is_an_authentication_error(softhsm):
    make_hsm_key(softhsm, "pin-test")
    with pytest.raises(KeystoreAuthenticationFailed) as err:
        hsm(softhsm, "pin-test", pin="0000").test_connection()
    assert "PIN" in err.value.message and "PIN" in err.value.fix
    hsm(softhsm, "pin-test").test_connection()  # the right PIN still works afterwards


def test_missing_key_and_missing_token(softhsm):
    with pytest.raises(KeystoreKeyNotFound) as err:
        hsm(softhsm, "label:no-such-key").wrap(b"x" * 32, CTX)
    assert "no-such-key" in err.value.message
    assert isinstance(err.value, KeyUnavailable)
    with pytest.raises(KeystoreUnreachable):
        hsm(softhsm, "label:any", token="no-such-token").test_connection()


def test_extractable_key_is_refused(softhsm):
    make_hsm_key(softhsm, "exportable", extractable=True)
    with pytest.raises(KeystoreKeyUnsuitable) as err:
        hsm(softhsm, "exportable").check_key()
    assert "extractable" in err.value.message and "CKA_EXTRACTABLE=false" in err.value.fix
    with pytest.raises(KeystoreKeyUnsuitable):
        hsm(softhsm, "exportable").wrap(b"x" * 32, CTX)


def test_module_must_be_on_the_operator_allow_list(softhsm):
    with pytest.raises(KeystoreConfigInvalid) as err:
        hsm(softhsm, "x", allowed=[])
    assert "allow-list" in err.value.message and "OPENKCM_PKCS11_MODULES" in err.value.fix
    with pytest.raises(KeystoreConfigInvalid):
        Pkcs11Connector({"module_path": "/tmp/evil.so", "token_label": "t"}, {}, allowed_modules=[softhsm["module"]])


def test_token_by_slot_id(softhsm):
    import pkcs11

    make_hsm_key(softhsm, "by-slot")
    lib = pkcs11.lib(softhsm["module"])
    slot = next(s for s in lib.get_slots(token_present=True) if s.get_token().label == softhsm["token"])
    conn = Pkcs11Connector(
        {"module_path": softhsm["module"], "slot_id": str(slot.slot_id)}, {"pin": softhsm["pin"]},
        allowed_modules=[softhsm["module"]], keystore_id="ks-hsm", key_ref="by-slot",
    )
    assert conn.unwrap(conn.wrap(b"s" * 32, CTX), CTX) == b"s" * 32
    with pytest.raises(KeystoreConfigInvalid):
        Pkcs11Connector({"module_path": softhsm["module"], "slot_id": "first"}, {}, allowed_modules=[softhsm["module"]])


def test_a_wrong_pin_never_rides_on_another_keystores_login(softhsm):
    """Two keystores name the same token (by label and by slot); one has a wrong PIN. Run concurrently, the
    wrong one fails every time — PKCS#11 login state is shared per process, so this needs the token lock."""
    import threading

    import pkcs11

    make_hsm_key(softhsm, "shared-token")
    lib = pkcs11.lib(softhsm["module"])
    slot = next(s for s in lib.get_slots(token_present=True) if s.get_token().label == softhsm["token"])
    good = hsm(softhsm, "shared-token")
    bad = Pkcs11Connector(
        {"module_path": softhsm["module"], "slot_id": slot.slot_id}, {"pin": "pin-wrong"},
        allowed_modules=[softhsm["module"]], keystore_id="ks-other-account", key_ref="shared-token",
    )
    blob = good.wrap(b"g" * 32, CTX)
    outcomes = {"good": [], "bad": []}

    def run(name, conn):
        for _ in range(15):
            try:
                outcomes[name].append(conn.unwrap(blob, CTX) == b"g" * 32)
            except KeystoreAuthenticationFailed:
                outcomes[name].append("refused")

    threads = [threading.Thread(target=run, args=("good", good)), threading.Thread(target=run, args=("bad", bad))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert outcomes["good"] == [True] * 15
    assert outcomes["bad"] == ["refused"] * 15
