"""Found by the benchmark with two server processes sharing the port (SO_REUSEPORT): a client's
Create -> Activate -> Encrypt, each on a new connection (libmongocrypt's delegated mode does exactly
that, one connection per KMS request), may land on different workers. The worker that answered Create
must not keep refusing Encrypt as "Pre-Active" for its cache TTL after another worker activated the key.

Two KmipCore instances over the same tables stand for two worker processes (each has its own object
cache); the requests are real TTLV through the bytes-in/bytes-out core."""

from __future__ import annotations

from bench import kmip_requests as kr
from tests.identities import recorded_identity


def test_activate_on_one_worker_is_seen_by_another(runtime, tenant_factory):
    from openkcm.kmip.core import KmipCore

    tenant = tenant_factory(tenant_id="coherence-a")
    ident = recorded_identity(tenant.tenant_id, "app", "CN=app", "c0ffee")
    worker_a, worker_b = KmipCore(runtime), KmipCore(runtime)

    uid = kr.payload_of(worker_a.handle(kr.create("coherent"), ident)).child_value(kr.Tag.UNIQUE_IDENTIFIER)
    kr.payload_of(worker_b.handle(kr.activate(uid), ident))
    encrypted = kr.payload_of(worker_a.handle(kr.encrypt(uid, b"x" * 64), ident))
    assert len(encrypted.child_value(kr.Tag.DATA)) == 80  # 64 bytes + one PKCS5 block
    assert len(encrypted.child_value(kr.Tag.IV_COUNTER_NONCE)) == 16


def test_pre_active_key_still_refused_for_encrypt(runtime, tenant_factory):
    """The fix must not loosen the lifecycle rule: a key nobody activated stays unusable."""
    from openkcm.kmip.core import KmipCore

    tenant = tenant_factory(tenant_id="coherence-b")
    ident = recorded_identity(tenant.tenant_id, "app", "CN=app", "c0ffee")
    worker_a, worker_b = KmipCore(runtime), KmipCore(runtime)
    uid = kr.payload_of(worker_a.handle(kr.create(), ident)).child_value(kr.Tag.UNIQUE_IDENTIFIER)
    for worker in (worker_a, worker_b):
        try:
            kr.payload_of(worker.handle(kr.encrypt(uid, b"x" * 64), ident))
        except kr.KmipFailure as exc:
            assert "state" in str(exc)
        else:
            raise AssertionError("a Pre-Active key encrypted")
