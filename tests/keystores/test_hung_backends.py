"""A keystore call that hangs cannot be cancelled (PKCS#11 has no call timeout), so it keeps a worker of the
process's keystore pool until the backend answers. Each backend may hold only a few workers: one
customer's unresponsive HSM must not make every other tenant's keystore calls time out."""

from __future__ import annotations

import threading
import time

import pytest

from openkcm.domain.keystores import base
from openkcm.domain.keystores.pkcs11 import _token_lock
from tests.keystores.conftest import make_hsm_key
from tests.keystores.test_pkcs11 import hsm


class _Backend(base.KeystoreConnector):
    provider = "test-backend"

    def __init__(self, hang: threading.Event | None, **kwargs):
        super().__init__(**kwargs)
        self.hang = hang

    def _test_connection(self) -> None:
        if self.hang is not None:
            self.hang.wait(30)

    def _describe_key(self, key_ref: str) -> base.KeyInfo:
        raise NotImplementedError

    def _wrap(self, key_ref, plaintext, context):
        return plaintext

    def _unwrap(self, key_ref, blob, context):
        return blob


def test_a_hung_backend_keeps_few_workers_and_others_still_answer():
    answered = threading.Event()
    hung = _Backend(answered, keystore_id="customer-a-hsm", key_ref="k", timeout=0.05)
    try:
        for _ in range(40):  # more than the pool has workers
            with pytest.raises(base.KeystoreTimeout):
                hung.test_connection()
        started = time.monotonic()
        with pytest.raises(base.KeystoreTimeout, match="have not returned"):
            hung.test_connection()
        assert time.monotonic() - started < 0.05  # refused at once, not after another timeout
        other = _Backend(None, keystore_id="customer-b-kms", key_ref="k", timeout=2.0)
        assert other.wrap(b"k" * 32, {"tenant": "b"}) == b"k" * 32
    finally:
        answered.set()
    deadline = time.monotonic() + 5
    while True:  # the backend answered: its workers come back and its calls work again
        try:
            hung.with_key("k").wrap(b"k" * 32, {"tenant": "a"})
            break
        except base.KeystoreTimeout:
            assert time.monotonic() < deadline
            time.sleep(0.02)


def test_a_pkcs11_call_behind_a_hung_one_gives_up_instead_of_queueing(softhsm):
    make_hsm_key(softhsm, "hung-module-key")
    connector = hsm(softhsm, "hung-module-key")
    connector.timeout = 0.3
    lock = _token_lock(softhsm["module"], "*")
    assert lock.acquire(timeout=5)  # what a hung C_ call inside the module's lock looks like to the next one
    try:
        started = time.monotonic()
        with pytest.raises(base.KeystoreTimeout):
            connector.wrap(b"k" * 32, {"tenant": "a"})
        assert time.monotonic() - started < 2
        time.sleep(0.5)  # the worker gave up on the lock (it does not wait for it forever)
        assert not any(t.name.startswith("keystore") and _waits_for_lock(t) for t in threading.enumerate())
    finally:
        lock.release()
    assert connector.unwrap(connector.wrap(b"k" * 32, {"tenant": "a"}), {"tenant": "a"}) == b"k" * 32


def _waits_for_lock(thread: threading.Thread) -> bool:
    import sys
    import traceback

    frame = sys._current_frames().get(thread.ident or -1)
    return frame is not None and any("_session" in line for line in traceback.format_stack(frame))
