"""moto's AWS emulation made durable (DECISIONS 15).

Guarantee: a mutating call that moto acknowledged with a 2xx survives SIGKILL of every process.

How: a WSGI middleware in front of moto's own application
- serialises mutating calls (moto's backends are not written for concurrent mutation anyway);
- appends each successful *deterministic* mutating call (every DynamoDB write) to a journal and fsyncs it
  before the response leaves; replaying the journal on start rebuilds exactly that state;
- for calls whose effect is not reproducible by replay (KMS CreateKey invents ids and key material, SQS
  receives move messages ...), writes a full snapshot before answering instead;
- compacts: a snapshot is a pickle of moto's backends written to a temporary file, fsync'd and renamed
  over the previous one (a half-written snapshot never replaces a good one). Each snapshot names the
  journal generation that follows it, so a crash between snapshot and journal switch never replays a
  call twice.

Why moto and not dynalite: the project needs KMS, SQS, SNS, EventBridge and DynamoDB transactions
locally; dynalite has no TransactWriteItems and emulates DynamoDB only (see FACTS.md and the README).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import os
import pickle
import socket
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization

from openkcm.files import fsync_dir

SERVICES = ("dynamodb", "kms", "sqs", "sns", "events", "secretsmanager", "s3", "sts", "iam", "scheduler")

_DYNAMODB_READS = frozenset(
    {
        "GetItem",
        "BatchGetItem",
        "Query",
        "Scan",
        "TransactGetItems",
        "DescribeTable",
        "ListTables",
        "DescribeTimeToLive",
        "DescribeContinuousBackups",
        "ListTagsOfResource",
        "DescribeEndpoints",
        "DescribeLimits",
        "ListBackups",
        "ListGlobalTables",
        "ListExports",
        "ListImports",
    }
)
_READ_PREFIXES = ("Get", "List", "Describe", "Head")
_PURE_CRYPTO = frozenset(
    {
        "Encrypt",
        "Decrypt",
        "ReEncrypt",
        "GenerateDataKey",
        "GenerateDataKeyWithoutPlaintext",
        "GenerateDataKeyPair",
        "GenerateDataKeyPairWithoutPlaintext",
        "GenerateRandom",
        "Sign",
        "Verify",
        "GenerateMac",
        "VerifyMac",
        "AssumeRole",
        "GetCallerIdentity",
    }
)


def _load_private_key(der: bytes) -> Any:
    return serialization.load_der_private_key(der, None)


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _BackendPickler(pickle.Pickler):
    """Pickles moto's backends. Two kinds of member do not pickle and are rebuilt instead: cryptography
    private keys of the KMS backend (stored as DER) and the locks some backends keep (a new lock)."""

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES):
            return (threading.RLock if "RLock" in type(obj).__name__ else threading.Lock), ()
        if type(obj).__module__.startswith("cryptography.hazmat.bindings") and hasattr(obj, "private_bytes"):
            der = obj.private_bytes(
                serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return _load_private_key, (der,)
        return NotImplemented


def classify(environ: dict[str, Any], body: bytes) -> str:
    """'read', 'journal' (deterministic write) or 'snapshot' (write that replay could not reproduce)."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    auth = environ.get("HTTP_AUTHORIZATION", "")
    service = ""
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        service = scope[3] if len(scope) > 3 else ""
    if target:
        action = target.rsplit(".", 1)[-1]
    else:
        action = parse_qs(body.decode("latin-1")).get("Action", [""])[0] if body else ""
        if not action:
            action = parse_qs(environ.get("QUERY_STRING", "")).get("Action", [""])[0]
    if service == "dynamodb" or target.startswith("DynamoDB_"):
        return "read" if action in _DYNAMODB_READS else "journal"
    if action:
        return "read" if action in _PURE_CRYPTO or action.startswith(_READ_PREFIXES) else "snapshot"
    return "read" if environ.get("REQUEST_METHOD") in ("GET", "HEAD", "OPTIONS") else "snapshot"


class DurableStore:
    """Snapshot + journal files of one data directory, and the lock that keeps them consistent."""

    def __init__(self, directory: Path, compact_after: int = 5000) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.lock = threading.RLock()
        self._compact_after = compact_after
        self._journal: io.TextIOWrapper | None = None
        self._entries = 0
        self.generation = 0

    @property
    def snapshot_path(self) -> Path:
        return self.dir / "moto-snapshot.pkl"

    def journal_path(self, generation: int) -> Path:
        return self.dir / f"moto-journal-{generation:08d}.log"

    # ---- restore -------------------------------------------------------------------------------
    def restore(self, app: Callable[..., Iterable[bytes]]) -> int:
        """Load the snapshot into moto's backends and replay the journal that follows it."""
        from moto.backends import get_backend

        if self.snapshot_path.exists():
            with open(self.snapshot_path, "rb") as handle:
                state = pickle.load(handle)
            self.generation = state["generation"]
            for name, backends in state["backends"].items():
                target = get_backend(name)
                target.clear()
                target.update(backends)
        replayed = 0
        path = self.journal_path(self.generation)
        if path.exists():
            good = 0  # bytes of complete, replayed lines
            with open(path, "rb") as handle:
                for raw in handle:
                    if not raw.endswith(b"\n"):
                        break  # a torn last line: that call was never acknowledged
                    try:
                        entry = json.loads(raw)
                    except ValueError:
                        break
                    _replay(app, entry)
                    replayed += 1
                    good += len(raw)
            if good != path.stat().st_size:
                # Cut the torn fragment (and anything after it) off before appending again: the next
                # acknowledged write would otherwise be glued to it and lost on the next replay.
                os.truncate(path, good)
        self._entries = replayed
        self._journal = _open_journal(path)
        for stale in self.dir.glob("moto-journal-*.log"):
            if stale != path:
                stale.unlink()
        return replayed

    # ---- write path ----------------------------------------------------------------------------
    def append(self, environ: dict[str, Any], body: bytes) -> None:
        assert self._journal is not None
        entry = {
            "m": environ["REQUEST_METHOD"],
            "p": environ.get("PATH_INFO", "/"),
            "q": environ.get("QUERY_STRING", ""),
            "h": {k: v for k, v in environ.items() if k.startswith("HTTP_") or k == "CONTENT_TYPE"},
            "b": base64.b64encode(body).decode(),
        }
        self._journal.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self._journal.flush()
        os.fsync(self._journal.fileno())
        self._entries += 1
        if self._entries >= self._compact_after:
            self.snapshot()

    def snapshot(self) -> None:
        """Write-then-rename a snapshot of every backend, then start the next journal generation."""
        from moto.backends import get_backend

        with self.lock:
            generation = self.generation + 1
            state = {"generation": generation, "backends": {n: dict(get_backend(n)) for n in SERVICES}}
            tmp = self.snapshot_path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds moto's KMS keys
            with os.fdopen(fd, "wb") as handle:
                _BackendPickler(handle, protocol=pickle.HIGHEST_PROTOCOL).dump(state)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.snapshot_path)
            fsync_dir(self.dir)
            old = self.journal_path(self.generation)
            if self._journal is not None:
                self._journal.close()
            self.generation = generation
            self._journal = _open_journal(self.journal_path(generation))
            self._entries = 0
            old.unlink(missing_ok=True)

    def close(self) -> None:
        with self.lock:
            if self._journal is not None:
                self._journal.close()
                self._journal = None


def _open_journal(path: Path) -> io.TextIOWrapper:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    return os.fdopen(fd, "a", encoding="utf-8")


def _replay(app: Callable[..., Iterable[bytes]], entry: dict[str, Any]) -> None:
    from werkzeug.test import EnvironBuilder

    headers = {k[5:].replace("_", "-").title(): v for k, v in entry["h"].items() if k.startswith("HTTP_")}
    builder = EnvironBuilder(
        method=entry["m"],
        path=entry["p"],
        query_string=entry["q"],
        headers=headers,
        data=base64.b64decode(entry["b"]),
        content_type=entry["h"].get("CONTENT_TYPE"),
    )
    environ = builder.get_environ()
    for _ in app(environ, lambda status, headers, exc_info=None: None):
        pass


_ITEM_LOCK = threading.RLock()
_ITEM_ACTIONS = (
    "get_item",
    "batch_get_item",
    "query",
    "scan",
    "put_item",
    "update_item",
    "delete_item",
    "batch_write_item",
    "transact_get_items",
    "transact_write_items",
)


def atomic_dynamodb_items() -> None:
    """Make moto's DynamoDB item operations atomic with respect to each other, as DynamoDB's are. moto
    applies an UpdateItem to the stored item in place, one action at a time, so a GetItem served by another
    thread meanwhile could return half an update (say a re-wrapped blob beside its old L2 version: an
    integrity failure DynamoDB never shows). One lock per process around each DynamoDB handler closes that
    (moto serves one request at a time per GIL anyway). Idempotent."""
    from moto.dynamodb.responses import DynamoHandler

    for name in _ITEM_ACTIONS:
        handler = getattr(DynamoHandler, name, None)
        if handler is None or getattr(handler, "_openkcm_atomic", False):
            continue

        def atomic(self: Any, _handler: Callable[..., Any] = handler) -> Any:
            with _ITEM_LOCK:
                return _handler(self)

        atomic._openkcm_atomic = True  # type: ignore[attr-defined]
        setattr(DynamoHandler, name, atomic)


def _loopback_host(host_header: str) -> bool:
    """Whether a Host header names this machine: localhost, *.localhost or a loopback address literal."""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:4566
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def refusal(environ: dict[str, Any]) -> str | None:
    """Why a request to the local AWS is refused, or None. Only the stack's own SDK clients (boto3,
    pynamodb) may use it, and they never send ``Origin``; every browser request that could do harm does
    (a cross-site POST, a CORS preflight). moto answers CORS for any origin, so without this any web page
    could read the local DynamoDB or wipe it through moto's ``/moto-api/reset``. A Host that is not this
    machine is a DNS-rebinding page talking to 127.0.0.1 under its own name."""
    if environ.get("HTTP_ORIGIN") is not None:
        return "cross-origin requests are refused"
    if environ.get("REQUEST_METHOD") == "OPTIONS":
        return "CORS preflights are refused"
    if environ.get("PATH_INFO", "").startswith("/moto-api"):
        return "moto's own API is disabled"
    if not _loopback_host(environ.get("HTTP_HOST", "")):
        return "the Host header must name this machine (localhost or a loopback address)"
    return None


class DurableMiddleware:
    def __init__(self, app: Callable[..., Iterable[bytes]], store: DurableStore) -> None:
        self.app = app
        self.store = store

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        refused = refusal(environ)
        if refused is not None:
            start_response("403 Forbidden", [("Content-Type", "text/plain"), ("Connection", "close")])
            return [f"forbidden: {refused}\n".encode()]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        kind = classify(environ, body)
        if kind == "read":
            return self.app(environ, start_response)
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[..., Any]:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        with self.store.lock:
            replay_environ = dict(environ)
            chunks = b"".join(self.app(environ, capture))
            if captured.get("status", "500").startswith("2"):
                if kind == "journal":
                    self.store.append(replay_environ, body)
                else:
                    self.store.snapshot()
        start_response(captured["status"], captured["headers"])
        return [chunks]


class DurableMotoServer:
    """A moto server on ``host:port`` whose state lives in ``directory``."""

    def __init__(self, directory: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = DurableStore(directory)
        self._host, self._port = host, port
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.replayed = 0

    def start(self) -> str:
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        atomic_dynamodb_items()

        class QuietHandler(MotoRequestHandler):
            def log_request(self, *args: Any) -> None:
                return None

        # Our own socket: werkzeug would print and sys.exit(1) when the port is in use; this raises OSError.
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        listener = socket.create_server((self._host, self._port), family=family)
        try:
            app = DomainDispatcherApplication(create_backend_app)
            self.replayed = self.store.restore(app)
            self._server = make_server(
                self._host,
                listener.getsockname()[1],
                DurableMiddleware(app, self.store),
                threaded=True,
                request_handler=QuietHandler,
                fd=listener.fileno(),
            )
        finally:
            listener.close()  # the server holds its own duplicate
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="moto")
        self._thread.start()
        return self.endpoint

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def endpoint(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        self.store.close()
