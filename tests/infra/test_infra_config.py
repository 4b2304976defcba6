"""Deployment parameters and helper scripts, without synthesis."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

pytestmark = pytest.mark.infra


def _config(**context):
    from infra_cdk.config import from_context

    return from_context(lambda key: context.get(key))


def test_defaults_follow_the_settings() -> None:
    from openkcm.config import Settings

    config = _config()
    defaults = Settings.model_fields
    assert config.table_prefix == defaults["table_prefix"].default
    assert config.event_bus_name == defaults["event_bus_name"].default == "openkcm-events"
    assert config.rotation_schedule == defaults["rotation_schedule"].default
    assert config.regions == ["us-east-1"]
    assert config.kmip_min_count >= 2


def test_lists_from_strings_and_json() -> None:
    config = _config(regions="eu-central-1, us-east-1", hsmPorts="[1792, 2223]", kmipInternetFacing="false")
    assert config.regions == ["eu-central-1", "us-east-1"]
    assert config.hsm_ports == [1792, 2223]
    assert config.kmip_internet_facing is False


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"tablePrefix": "bad prefix!"}, "tablePrefix"),
        ({"jwtIssuer": "https://issuer.example.com"}, "jwtAudience"),
        ({"jwtIssuer": "http://issuer.example.com", "jwtAudience": "a"}, "https"),
        ({"vpcId": "vpc-1", "availabilityZones": "a", "privateSubnetIds": "s1"}, "two"),
        (
            {"vpcId": "vpc-1", "availabilityZones": "a,b", "privateSubnetIds": "s1,s2"},
            "publicSubnetIds",
        ),
        ({"kmipMinCount": 1}, "kmipMinCount"),
        ({"kmipDesiredCount": 20, "kmipMaxCount": 10}, "kmipMaxCount"),
        ({"frameAncestors": "http://console.example.com"}, "https"),
        ({"kmipCpu": "lots"}, "integer"),
        ({"logRetentionDays": 0}, "between"),
        ({"pkcs11Modules": "libsofthsm2.so"}, "absolute"),
    ],
)
def test_bad_parameters_are_refused_with_a_clear_message(context, message) -> None:
    with pytest.raises(ValueError, match=message):
        _config(**context)


def test_parked_kmip_service_is_allowed() -> None:
    assert _config(kmipDesiredCount=0).kmip_desired_count == 0


def test_missing_lambda_assets_name_the_build_script(tmp_path: Path) -> None:
    from infra_cdk.components.functions import asset_dir

    with pytest.raises(FileNotFoundError, match="build_assets.sh"):
        asset_dir(_config(lambdaAssetRoot=str(tmp_path)), "cmk_api")


def test_arch_marker_selects_x86(tmp_path: Path) -> None:
    from aws_cdk import aws_lambda as lambda_

    from infra_cdk.components.functions import architecture_of

    assert architecture_of(tmp_path).name == lambda_.Architecture.ARM_64.name
    (tmp_path / "ARCH").write_text("x86_64\n")
    assert architecture_of(tmp_path).name == lambda_.Architecture.X86_64.name


def test_log_retention_rounds_up() -> None:
    from aws_cdk import aws_logs as logs

    from infra_cdk.components.functions import retention

    assert retention(365) == logs.RetentionDays.ONE_YEAR
    assert retention(366) == logs.RetentionDays.THIRTEEN_MONTHS
    assert retention(2) == logs.RetentionDays.THREE_DAYS


def test_env_names_must_exist() -> None:
    from infra_cdk.components.env import infra, setting

    assert setting("webhook_secret_arn") == "OPENKCM_WEBHOOK_SECRET_ARN"
    with pytest.raises(KeyError):
        setting("no_such_setting")
    with pytest.raises(KeyError):
        infra("OPENKCM_SOMETHING_ELSE")


def test_tls_secrets_are_private_and_chain_to_the_ca(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from infra_cdk.tls_secrets import main

    directory = tmp_path / "pki"
    assert (
        main(["--dir", str(directory), "--trust-domain", "kcm.example.com", "--host", "kmip.example.com"])
        == 0
    )
    ca_secret = json.loads((directory / "ca-secret.json").read_text())
    tls_secret = json.loads((directory / "kmip-tls-secret.json").read_text())
    for name in ("ca-secret.json", "kmip-tls-secret.json"):
        assert stat.S_IMODE(os.stat(directory / name).st_mode) == 0o600
    assert set(ca_secret) == {"ca_cert_pem", "ca_key_pem"}
    assert set(tls_secret) == {"server_cert_pem", "server_key_pem", "ca_cert_pem"}
    ca = x509.load_pem_x509_certificate(tls_secret["ca_cert_pem"].encode())
    server = x509.load_pem_x509_certificate(tls_secret["server_cert_pem"].encode())
    server.verify_directly_issued_by(ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["kmip.example.com"]
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    # Run again: the same CA is reused, a new server certificate issued.
    main(["--dir", str(directory), "--trust-domain", "kcm.example.com", "--host", "kmip.example.com"])
    again = json.loads((directory / "kmip-tls-secret.json").read_text())
    assert again["ca_cert_pem"] == tls_secret["ca_cert_pem"]
    assert again["server_cert_pem"] != tls_secret["server_cert_pem"]


def test_tls_secrets_need_a_host(tmp_path: Path) -> None:
    from infra_cdk.tls_secrets import main

    with pytest.raises(SystemExit):
        main(["--dir", str(tmp_path), "--trust-domain", "kcm.example.com"])


def test_kmip_entry_point_writes_the_tls_files_privately_and_drops_the_variables(tmp_path: Path) -> None:
    """Runs the task's real entry-point script with /bin/sh; only the final exec is swapped for `env`."""
    import subprocess

    from infra_cdk.components.kmip import TLS_ENTRYPOINT

    script = TLS_ENTRYPOINT.replace("exec python -m kmip_fargate", "exec env")
    assert script != TLS_ENTRYPOINT
    tls = tmp_path / "data" / "tls"
    env = {
        "PATH": os.environ["PATH"],
        "OPENKCM_KMIP_CERT": str(tls / "server.pem"),
        "OPENKCM_KMIP_KEY": str(tls / "server.key"),
        "OPENKCM_KMIP_CA": str(tls / "ca.pem"),
        "KMIP_TLS_SERVER_CERT_PEM": "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----",
        "KMIP_TLS_SERVER_KEY_PEM": "-----BEGIN PRIVATE KEY-----\nBBB\n-----END PRIVATE KEY-----",
        "KMIP_TLS_CA_CERT_PEM": "-----BEGIN CERTIFICATE-----\nCCC\n-----END CERTIFICATE-----",
    }
    done = subprocess.run(
        ["/bin/sh", "-c", script], env=env, capture_output=True, text=True, timeout=10, check=True
    )
    assert "KMIP_TLS_" not in done.stdout  # the server process never sees the PEM variables
    assert (tls / "server.key").read_text() == env["KMIP_TLS_SERVER_KEY_PEM"] + "\n"
    assert (tls / "ca.pem").read_text().startswith("-----BEGIN CERTIFICATE-----")
    for name in ("server.pem", "server.key", "ca.pem"):
        assert stat.S_IMODE(os.stat(tls / name).st_mode) == 0o600
    missing = {k: v for k, v in env.items() if k != "KMIP_TLS_SERVER_KEY_PEM"}
    failed = subprocess.run(
        ["/bin/sh", "-c", script], env=missing, capture_output=True, text=True, timeout=10
    )
    assert failed.returncode != 0  # set -u: a missing secret stops the task instead of starting without TLS


def test_kmip_image_context_has_what_the_dockerfile_copies(tmp_path: Path) -> None:
    """build_assets.sh --only kmip stages the Docker build context; every COPY source must be in it,
    and nothing else of the working tree (no .venv, no node_modules)."""
    import shlex
    import subprocess

    repo = Path(__file__).resolve().parents[2]
    dockerfile = repo / "kmip_fargate" / "Dockerfile"
    if not dockerfile.is_file():
        pytest.skip("kmip_fargate/Dockerfile is not there yet")
    subprocess.run(
        [str(repo / "infra_cdk" / "build_assets.sh"), "--only", "kmip", "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    context = tmp_path / "kmip-image"
    sources = []
    for line in dockerfile.read_text().splitlines():
        parts = shlex.split(line) if line.strip().upper().startswith("COPY ") else []
        if parts and not any(p.startswith("--from") for p in parts):
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    assert sources, "the Dockerfile copies nothing from the context?"
    for source in sources:
        assert (context / source.rstrip("/")).exists(), source
    assert (context / "kmip_fargate" / "Dockerfile").is_file()
    assert not (context / ".venv").exists() and not (context / "frontend").exists()
    assert not list(context.rglob("__pycache__"))
