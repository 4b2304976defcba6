"""The listener against hostile and unusual peers over real sockets (review 6e): a refused certificate
sending maximal messages must not stall other clients; connections that never finish the TLS handshake
are bounded and timed out; a client that half-closes after its requests still gets its answers."""

from __future__ import annotations

import os
import socket
import ssl
import statistics
import subprocess
import sys
import time
from pathlib import Path

from openkcm.protocol.tags import Op, Status
from tests.kmip.conftest import KmipConnection, client_context
from tests.kmip.test_listener_protocol import QUERY, _closed, _until, _warm_key, listener  # noqa: F401
from tests.kmip.test_protocol import create_payload
from tests.kmip.wire import request, response, uid

REPO = Path(__file__).resolve().parents[2]


def test_a_refused_client_sending_maximal_messages_does_not_stall_the_others(
    listener,  # noqa: F811
    tenant_factory,
    bundle,
):
    """A CA-signed certificate this deployment never recorded (refused by the core on every message)
    sends 1 MiB messages of 131,071 empty items over 4 connections. Such messages used to be decoded on
    the event loop before the certificate was checked (and again in the pool): a victim's warm Get went
    from ~1 ms to seconds."""
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.001)  # as kmip_fargate.main.build_server sets it in production
    try:
        server = listener(max_message_size=1 << 20, read_timeout=30, idle_timeout=60)
        tenant_factory(tenant_id="victim")
        tenant_factory(tenant_id="mallory")
        good = bundle("victim")
        evil = bundle("mallory", recorded=False)
        with KmipConnection(server.port, good) as victim:
            key_id = _warm_key(victim)
            get = request((1, 2), (Op.GET, [uid(key_id)]))

            def sample(seconds: float) -> list[float]:
                out, end = [], time.monotonic() + seconds
                while time.monotonic() < end:
                    started = time.perf_counter()
                    assert response(victim.call(get))[1][0].status == Status.SUCCESS
                    out.append(time.perf_counter() - started)
                    time.sleep(0.005)
                return out

            baseline = sample(1.0)
            attacker = subprocess.Popen(
                [sys.executable, "-m", "tests.kmip.hostile_client", str(server.port), str(evil["cert"]),
                 str(evil["key"]), str(evil["ca"]), "4", "4"],
                cwd=REPO,
                stdout=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            try:
                time.sleep(0.5)
                attacked = sample(3.0)
                out, _ = attacker.communicate(timeout=60)
            finally:
                if attacker.poll() is None:
                    attacker.kill()
                    attacker.wait()
    finally:
        sys.setswitchinterval(switch)
    answered = int(out.strip() or 0)
    b_med, a_med = statistics.median(baseline) * 1000, statistics.median(attacked) * 1000
    a_max = max(attacked) * 1000
    print(
        f"\nGet median {b_med:.2f} ms; under attack median {a_med:.2f} ms, max {a_max:.1f} ms; {answered} hostile"
    )
    assert answered > 0  # the attack ran (and each message got its refusal)
    assert a_med < 20 and a_max < 100, (b_med, a_med, a_max)


# ---- connections that never finish the TLS handshake -------------------------------------------------------
def _server_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_connections_that_never_handshake_are_bounded_and_timed_out(listener, tenant_factory, bundle):  # noqa: F811
    """Silent TCP peers (no ClientHello) used to hold a socket each until the handshake timeout, outside
    every limit. Now at most min(max_handshakes, max_connections) are held, the rest dropped at accept,
    and those held are dropped after handshake_timeout; the limits of accepted connections are kept and
    released exactly once."""
    server = listener(max_connections=4, handshake_timeout=1.5)
    tenant_factory(tenant_id="silent")
    paths = bundle("silent")
    before = _server_fds()
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(200)]
    try:
        time.sleep(0.5)
        held = _server_fds() - before - len(silent)  # the server's side of them
        assert held <= 4 + 2, held
        assert len(server._handshaking) <= 4
        # the bound held, the handshake timeout frees the slots: a real client gets in again
        assert _until(lambda: not server._handshaking, 5)
        assert _closed(silent[0], within=1)
    finally:
        for s in silent:
            s.close()
    with KmipConnection(server.port, paths) as conn:
        assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS
        assert server._connections == 1
    assert _until(lambda: server._connections == 0 and not server._per_client and not server._handshaking, 5)
    # a failed handshake (no client certificate) is counted and released too
    ctx = ssl.create_default_context(cafile=str(paths["ca"]))
    for _ in range(6):
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        try:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(QUERY)
                tls.recv(8)
        except (ssl.SSLError, ConnectionError, OSError):
            pass
        finally:
            raw.close()
    assert _until(lambda: not server._handshaking and server._connections == 0, 5)
    with KmipConnection(server.port, paths) as conn:
        assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS


def test_handshake_refusals_are_audited_once_with_a_count(listener):  # noqa: F811
    from openkcm.domain.audit import read_events

    server = listener(max_connections=2, handshake_timeout=1.0)
    silent = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
    try:
        audit = server.core.services.audit

        def refusals() -> list[dict]:
            audit.flush()
            return [
                e
                for e in read_events("_platform", since="2000-01-01T00:00:00+00:00")
                if e["operation"] == "Connect" and "handshakes in progress" in e["reason"]
            ]

        assert _until(lambda: len(refusals()) == 1, 5)
        assert refusals()[0]["kind"] == "security"
    finally:
        for s in silent:
            s.close()


# ---- half-close ------------------------------------------------------------------------------------------
def _call_then_half_close(port: int, paths: dict[str, Path], data: bytes, answers: int) -> list[bytes]:
    """TLS over a raw socket (memory BIOs), so the client can send its requests, shut down its sending
    side (TCP FIN, as a one-shot client does) and still read and decrypt the answers."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = client_context(paths).wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")

    def flush() -> None:
        pending = outgoing.read()
        if pending:
            raw.sendall(pending)

    def feed() -> bool:
        chunk = raw.recv(65536)
        if not chunk:
            incoming.write_eof()
            return False
        incoming.write(chunk)
        return True

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                if not feed():
                    raise ConnectionError("closed during the handshake") from None
        flush()
        tls.write(data)
        flush()
        raw.shutdown(socket.SHUT_WR)
        received, out = b"", []
        while len(out) < answers:
            if len(received) >= 8 and len(received) >= 8 + int.from_bytes(received[4:8], "big"):
                end = 8 + int.from_bytes(received[4:8], "big")
                out.append(received[:end])
                received = received[end:]
                continue
            try:
                received += tls.read(65536)
            except ssl.SSLWantReadError:
                if not feed():
                    break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
        return out
    finally:
        raw.close()


def test_requests_are_answered_when_the_client_half_closes(listener, tenant_factory, bundle):  # noqa: F811
    """The server used to close on the client's FIN and drop answers it had computed (and audited):
    inline (a warm Get), pooled (a Create) and pipelined ones."""
    server = listener()
    tenant_factory(tenant_id="halfclose")
    paths = bundle("halfclose")
    with KmipConnection(server.port, paths) as conn:
        key_id = _warm_key(conn)
    get = request((1, 2), (Op.GET, [uid(key_id)]))
    create = request((1, 2), (Op.CREATE, create_payload()))
    for data, count in ((get, 1), (QUERY, 1), (create, 1), (create + get + QUERY, 3), (get + create, 2)):
        answers = _call_then_half_close(server.port, paths, data, count)
        assert [response(a)[1][0].status for a in answers] == [Status.SUCCESS] * count, (count, len(answers))
    assert _until(lambda: server._connections == 0 and not server._live, 5)
    with KmipConnection(server.port, paths) as conn:
        assert response(conn.call(QUERY))[1][0].status == Status.SUCCESS
