"""Bounded property tests of the decoder and the core: arbitrary, mutated and truncated input never
crashes; it is either decoded or refused with TTLVError/MessageError, and the core always answers."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openkcm.protocol import messages, ttlv
from openkcm.protocol.messages import MessageError
from openkcm.protocol.ttlv import TTLVError
from tests.identities import recorded_identity

CAPTURES = sorted(
    (Path(__file__).resolve().parent / "captures" / "libmongocrypt").glob("*/*.ttlv")
)
SEEDS = [p.read_bytes() for p in CAPTURES]
BOUNDED = settings(
    max_examples=300,
    deadline=500,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def _decode(data: bytes) -> None:
    try:
        item = ttlv.decode(data, max_size=1 << 16)
    except TTLVError:
        return
    assert ttlv.encode(item) == data  # whatever we accept re-encodes to the same bytes


@BOUNDED
@given(st.binary(max_size=512))
def test_random_bytes(data: bytes):
    _decode(data)


@BOUNDED
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
    st.integers(0, 400),
)
def test_mutated_and_truncated_captures(seed: bytes, flips, cut):
    data = bytearray(seed)
    for position, value in flips:
        if position < len(data):
            data[position] = value
    for candidate in (bytes(data), bytes(data[:cut])):
        _decode(candidate)
        try:
            messages.decode_request(candidate)
        except MessageError:
            pass


def test_core_always_answers_malformed_requests(kmip_core, tenant_factory):
    tenant_factory(tenant_id="fuzzed")
    who = recorded_identity("fuzzed", "svc", "CN=svc", "f1")

    @settings(max_examples=120, deadline=2000, suppress_health_check=list(HealthCheck))
    @given(
        st.sampled_from([s for s, p in zip(SEEDS, CAPTURES, strict=True) if "request" in p.name]),
        st.lists(st.tuples(st.integers(8, 300), st.integers(0, 255)), min_size=1, max_size=4),
    )
    def run(seed: bytes, flips):
        data = bytearray(seed)
        for position, value in flips:
            if position < len(data):
                data[position] = value
        out = kmip_core.handle(bytes(data), who, "fuzz")
        root = ttlv.decode(out)
        assert root.tag == 0x42007B  # always a Response Message

    run()
