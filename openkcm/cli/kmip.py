"""``openkcm kmip serve``: the KMIP listener standalone (configuration from flags, else environment)."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path

from openkcm.cli.common import add_data_dir


def register(sub: argparse._SubParsersAction) -> None:
    kmip = sub.add_parser("kmip", help="the KMIP server (mutual TLS, port 5696)")
    commands = kmip.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the KMIP listener in the foreground")
    add_data_dir(serve)
    env = os.environ.get
    serve.add_argument("--host", default=env("OPENKCM_KMIP_HOST", "127.0.0.1"))
    serve.add_argument("--port", type=int, default=int(env("OPENKCM_KMIP_PORT", "5696")))
    serve.add_argument("--health-port", type=int, default=int(env("OPENKCM_KMIP_HEALTH_PORT", "5697")))
    serve.add_argument("--cert", type=Path, help="server certificate PEM (default: issued from the local CA)")
    serve.add_argument("--key", type=Path, help="server private key PEM")
    serve.add_argument("--ca", type=Path, help="CA bundle that client certificates must chain to")
    serve.add_argument("--workers", type=int, default=int(env("OPENKCM_KMIP_WORKERS", "8")))
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    from kmip_fargate.main import audit_wal_dir, config_from_env, run, write_server_certificate
    from openkcm.cli.common import connect
    from openkcm.ops.runtime import build_runtime

    settings = connect(args).settings  # resolves the local stack's endpoint when one runs
    runtime = build_runtime(settings, audit_wal_dir=audit_wal_dir(settings))
    config = replace(
        config_from_env(settings),
        host=args.host,
        port=args.port,
        health_port=args.health_port,
        workers=args.workers,
    )
    if args.cert and args.key:
        ca = args.ca or Path(settings.data_dir) / "pki" / "ca.pem"
        config = replace(config, cert_file=args.cert, key_file=args.key, ca_file=ca)
    else:
        cert, key, ca = write_server_certificate(
            runtime, Path(settings.data_dir) / "pki", [args.host, "localhost"]
        )
        config = replace(config, cert_file=cert, key_file=key, ca_file=args.ca or ca)
    print(
        f"KMIP listening on {config.host}:{config.port} (health {config.health_port}); Ctrl-C to stop",
        flush=True,
    )
    run(runtime, config)
    return 0
