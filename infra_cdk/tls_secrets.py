#!/usr/bin/env python3
"""Make the two Secrets Manager values a deployment needs, from the deployment CA (DECISIONS 9).

    .venv/bin/python infra_cdk/tls_secrets.py --dir deploy-pki --trust-domain kcm.example.com \\
        --host openkcm-kmip-0123.elb.eu-central-1.amazonaws.com [--host kmip.example.com]

creates (or reuses) the CA in ``--dir`` (``ca.key`` 0600, ``ca.pem``), issues a KMIP server certificate
for the given host names, and writes, each 0600:

- ``ca-secret.json``        ``{"ca_cert_pem", "ca_key_pem"}``  -> the stack's CaSecretArn
- ``kmip-tls-secret.json``  ``{"server_cert_pem", "server_key_pem", "ca_cert_pem"}`` -> KmipTlsSecretArn

Put them with ``aws secretsmanager put-secret-value --secret-id <arn> --secret-string file://<file>``,
then delete the local copies or keep ``--dir`` offline: it holds the CA key.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from openkcm.domain.pki import CertificateAuthority
from openkcm.files import write_private


def _write_private(path: Path, payload: dict[str, str]) -> None:
    write_private(path, json.dumps(payload).encode())


def make_secrets(directory: Path, trust_domain: str, hosts: list[str]) -> tuple[Path, Path]:
    if not hosts:
        raise ValueError("name at least one --host (the NLB DNS name, output KmipEndpoint without :5696)")
    ca = CertificateAuthority.load_or_create(directory, trust_domain)
    cert_pem, key_pem = ca.issue_server(hosts)
    ca_key_pem = (directory / "ca.key").read_text()
    ca_file, tls_file = directory / "ca-secret.json", directory / "kmip-tls-secret.json"
    _write_private(ca_file, {"ca_cert_pem": ca.cert_pem.decode(), "ca_key_pem": ca_key_pem})
    _write_private(
        tls_file,
        {
            "server_cert_pem": cert_pem.decode(),
            "server_key_pem": key_pem.decode(),
            "ca_cert_pem": ca.cert_pem.decode(),
        },
    )
    return ca_file, tls_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="CA directory (created 0700)")
    parser.add_argument("--trust-domain", required=True)
    parser.add_argument("--host", action="append", default=[], help="KMIP server host name (repeatable)")
    args = parser.parse_args(argv)
    try:
        ca_file, tls_file = make_secrets(args.dir, args.trust_domain, args.host)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"CaSecretArn      <- file://{ca_file}")
    print(f"KmipTlsSecretArn <- file://{tls_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
