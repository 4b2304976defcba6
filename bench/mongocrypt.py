"""What the application feels (DECISIONS 20): libmongocrypt explicit encryption throughput with a data key
whose master key lives on our KMIP server, versus the same with libmongocrypt's ``local`` KMS provider.

pymongocrypt's ``ExplicitEncrypter`` runs libmongocrypt's real KMIP client: our ``MongoCryptCallback``
keeps the key vault in memory and carries every KMS request over a fresh mutual-TLS socket to the
server (as the drivers do: one connection per KMS request). No mongod is needed.

Rounds alternate between the providers (local, kmip default, kmip delegated, local, ...) so that a noisy
machine hits all of them alike; each figure is the median of its rounds. Two cache settings:
- ``cached``: libmongocrypt's default data-key cache (60 s): the KMIP server is asked once per key per
  minute — how MongoDB's drivers reach a small overhead;
- ``uncached``: key expiration 1 ms, so (nearly) every encryption fetches and decrypts the data key again —
  one KMIP round trip on a new TLS connection per operation, the worst case.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import statistics
import sys
import time
import uuid
from contextlib import closing
from dataclasses import dataclass
from typing import Any

import bson
from bson.binary import STANDARD, Binary
from bson.codec_options import CodecOptions
from pymongocrypt.explicit_encrypter import ExplicitEncrypter
from pymongocrypt.options import MongoCryptOptions
from pymongocrypt.state_machine import MongoCryptCallback

from bench.harness import TENANT, Harness
from bench.kmip_load import machine

OPTS = CodecOptions(uuid_representation=STANDARD)
ALGORITHM = "AEAD_AES_256_CBC_HMAC_SHA_512-Deterministic"
VALUE = bson.encode({"v": "4111-1111-1111-1111"})


class VaultCallback(MongoCryptCallback):
    """In-memory key vault; KMS requests over mutual TLS to the KMIP server (``kmip`` provider only)."""

    def __init__(self, port: int, ctx: ssl.SSLContext | None) -> None:
        self.port = port
        self.ctx = ctx
        self.keys: dict[bytes, dict[str, Any]] = {}
        self.kms_requests = 0

    def kms_request(self, kms_context: Any) -> None:
        if self.ctx is None:
            raise RuntimeError("no KMS is configured for this provider")
        self.kms_requests += 1
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as raw:
            with self.ctx.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                sock.sendall(kms_context.message)
                while kms_context.bytes_needed > 0:
                    chunk = sock.recv(kms_context.bytes_needed)
                    if not chunk:
                        raise ConnectionError("the KMIP server closed the connection early")
                    kms_context.feed(chunk)

    def collection_info(self, database: str, filter: bytes) -> None:  # noqa: A002 - the interface's name
        return None

    def mark_command(self, database: str, cmd: bytes) -> bytes:
        raise AssertionError("explicit encryption never marks commands")

    def fetch_keys(self, filter: bytes):  # noqa: A002 - the interface's name
        query = bson.decode(filter, OPTS)
        wanted = {
            bytes(k) if isinstance(k, (bytes, Binary)) else k.bytes for k in query["$or"][0]["_id"]["$in"]
        }
        for key_id, doc in self.keys.items():
            if key_id in wanted:
                yield bson.encode(doc, codec_options=OPTS)

    def insert_data_key(self, data_key: bytes) -> bytes:
        doc = bson.decode(data_key, OPTS)
        key_id = doc["_id"]
        raw = key_id.bytes if isinstance(key_id, uuid.UUID) else bytes(key_id)
        self.keys[raw] = doc
        return raw

    def bson_encode(self, doc: Any) -> bytes:
        return bson.encode(doc, codec_options=OPTS)

    def close(self) -> None:
        return None


@dataclass
class Provider:
    name: str
    callback: VaultCallback
    kms: dict[str, Any]
    key_id: bytes

    def encrypter(self, expiration_ms: int | None) -> ExplicitEncrypter:
        return ExplicitEncrypter(self.callback, MongoCryptOptions(self.kms, key_expiration_ms=expiration_ms))


def make_providers(port: int, ctx: ssl.SSLContext) -> list[Provider]:
    providers = []
    local_kms = {"local": {"key": os.urandom(96)}}
    callback = VaultCallback(port, None)
    with closing(ExplicitEncrypter(callback, MongoCryptOptions(local_kms))) as enc:
        providers.append(Provider("local", callback, local_kms, enc.create_data_key("local")))
    kmip_kms = {"kmip": {"endpoint": f"127.0.0.1:{port}"}}
    for name, master_key in (("kmip (default: Get)", {}), ("kmip (delegated: Decrypt)", {"delegated": True})):
        callback = VaultCallback(port, ctx)
        with closing(ExplicitEncrypter(callback, MongoCryptOptions(kmip_kms))) as enc:
            key_id = enc.create_data_key("kmip", master_key=master_key)
        providers.append(Provider(name, callback, kmip_kms, key_id))
    return providers


def measure(provider: Provider, seconds: float, expiration_ms: int | None) -> tuple[float, int, float]:
    """Encryptions per second for ``seconds`` on one encrypter, the KMS requests it made, and this
    process's CPU microseconds per encryption (less sensitive to a busy machine than the wall clock)."""
    before = provider.callback.kms_requests
    with closing(provider.encrypter(expiration_ms)) as enc:
        # One encryption first: the key is fetched (and decrypted through the KMS) before the clock starts.
        check = enc.encrypt(VALUE, ALGORITHM, key_id=provider.key_id)
        if bson.decode(enc.decrypt(check))["v"] != "4111-1111-1111-1111":
            raise RuntimeError("round trip failed")
        count = 0
        cpu = time.process_time()
        start = time.perf_counter()
        stop = start + seconds
        while True:
            for _ in range(20):
                enc.encrypt(VALUE, ALGORITHM, key_id=provider.key_id)
            count += 20
            now = time.perf_counter()
            if now >= stop:
                break
        cpu = time.process_time() - cpu
    return count / (now - start), provider.callback.kms_requests - before, cpu / count * 1e6


def run(
    rounds: int = 3, seconds: float = 2.0, uncached_seconds: float = 2.0, keep: bool = False
) -> dict[str, Any]:
    config = {
        "rounds": rounds,
        "seconds_per_round": seconds,
        "uncached_seconds_per_round": uncached_seconds,
        "algorithm": ALGORITHM,
        "value": "a 16-character string in a BSON document",
        "kms_transport": "new mutual-TLS connection per KMS request (as the drivers do)",
        "server": "openkcm KMIP listener, real audit sink (WAL), own process; moto in its own process",
        "machine": machine(),
    }
    print("configuration: " + json.dumps(config))
    results: dict[str, dict[str, list[float]]] = {}
    with Harness(keep=keep) as harness:
        harness.start_moto()
        harness.provision()
        server = harness.start_openkcm()
        providers = make_providers(server.port, harness.client_context(TENANT))
        for mode, expiration, secs in (("cached", None, seconds), ("uncached", 1, uncached_seconds)):
            if secs <= 0:
                continue
            for _ in range(rounds):
                for provider in providers:
                    rate, kms, cpu_us = measure(provider, secs, expiration)
                    entry = results.setdefault(mode, {}).setdefault(provider.name, [])
                    entry.append(rate)
                    results.setdefault(f"{mode}-cpu", {}).setdefault(provider.name, []).append(cpu_us)
                    results.setdefault(f"{mode}-kms", {}).setdefault(provider.name, []).append(kms)
    print("\n=== libmongocrypt explicit encryption (pymongocrypt ExplicitEncrypter) ===")
    print(
        f"{'cache':<10}{'KMS provider':<28}{'enc/s (median)':>15}{'KMS req/round':>15}"
        f"{'overhead':>10}{'client CPU us/enc':>19}{'CPU overhead':>13}   enc/s per round"
    )
    summary: dict[str, Any] = {"config": config, "figures": {}}
    for mode in ("cached", "uncached"):
        if mode not in results:
            continue
        local = statistics.median(results[mode]["local"])
        local_cpu = statistics.median(results[f"{mode}-cpu"]["local"])
        for name, rates in results[mode].items():
            median = statistics.median(rates)
            overhead = 100 * (local / median - 1) if median else float("inf")
            kms = statistics.median(results[f"{mode}-kms"][name])
            cpu_us = statistics.median(results[f"{mode}-cpu"][name])
            cpu_overhead = 100 * (cpu_us / local_cpu - 1) if local_cpu else 0.0
            shown = "-" if name == "local" else f"{overhead:+.1f}%"
            shown_cpu = "-" if name == "local" else f"{cpu_overhead:+.1f}%"
            print(
                f"{mode:<10}{name:<28}{median:>15.0f}{kms:>15.0f}{shown:>10}{cpu_us:>19.1f}{shown_cpu:>13}   "
                + " ".join(f"{r:.0f}" for r in rates)
            )
            summary["figures"][f"{mode}/{name}"] = {
                "median": median,
                "rounds": rates,
                "overhead_pct": overhead,
                "kms_requests_per_round": kms,
                "client_cpu_us": cpu_us,
                "cpu_overhead_pct": cpu_overhead,
            }
    print(
        "overhead = extra time per encryption vs the local provider (local rate / kmip rate - 1); with cached"
        " keys both providers run the same code after the first fetch, so the wall-clock figure is noise"
        " around 0 on a busy machine and the client-CPU column is the steadier one"
    )
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.mongocrypt", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=2.0, help="per round, cached")
    p.add_argument(
        "--uncached-seconds", type=float, default=2.0, help="per round, key expiration 1 ms; 0 skips"
    )
    p.add_argument("--json", type=str, default=None)
    p.add_argument("--keep", action="store_true")
    a = p.parse_args(argv)
    summary = run(a.rounds, a.seconds, a.uncached_seconds, a.keep)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as out:
            json.dump(summary, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
