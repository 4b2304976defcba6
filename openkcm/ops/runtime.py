"""Wiring of one process: settings -> tables, root key, keyring, tenants, audit sink, CA.

Built once (a Lambda's cold start, a KMIP worker's start) and passed down; nothing here holds request
state. Adapters call :func:`build_runtime`; tests build one against moto the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.config import Settings, get_settings
from openkcm.domain.audit import AuditSink, ChainedAuditSink
from openkcm.domain.hierarchy import L1Resolver, TenantKeyring
from openkcm.domain.keystores import KeystoreResolver
from openkcm.domain.pki import CertificateAuthority
from openkcm.domain.rootkey import AwsKmsRootKey, LocalRootKey, RootKeyProvider
from openkcm.domain.tenants import Tenants
from openkcm.storage import bind_tables, create_tables


def build_root_key(settings: Settings) -> RootKeyProvider:
    if settings.root_key_provider == "aws-kms":
        import boto3

        return AwsKmsRootKey(boto3.client("kms", region_name=settings.region), settings.root_kms_key_list)
    return LocalRootKey(Path(settings.data_dir) / "keys")


@dataclass
class Runtime:
    settings: Settings
    clock: Clock
    root: RootKeyProvider
    tenants: Tenants
    keyring: TenantKeyring
    audit: AuditSink
    extras: dict[str, Any] = field(default_factory=dict)

    def certificate_authority(self) -> CertificateAuthority:
        """The deployment's CA: from Secrets Manager in AWS (read only by the roles that sign), else the
        embedded default's files in the data directory (key 0600), created on first use."""
        if "ca" not in self.extras:
            if self.settings.ca_secret_arn:
                import boto3

                secret = boto3.client("secretsmanager", region_name=self.settings.region).get_secret_value(
                    SecretId=self.settings.ca_secret_arn
                )
                self.extras["ca"] = CertificateAuthority.from_json(
                    secret["SecretString"], self.settings.trust_domain, self.clock
                )
            else:
                self.extras["ca"] = CertificateAuthority.load_or_create(
                    Path(self.settings.data_dir) / "pki", self.settings.trust_domain, self.clock
                )
        return self.extras["ca"]

    def close(self) -> None:
        self.audit.close()


def build_runtime(
    settings: Settings | None = None,
    *,
    clock: Clock = SYSTEM_CLOCK,
    audit: AuditSink | None = None,
    audit_wal_dir: Path | None = None,
    resolve_l1: L1Resolver | None = None,
    create: bool = False,
) -> Runtime:
    settings = settings or get_settings()
    bind_tables(settings.table_prefix, settings.region)
    if create:
        create_tables()
    root = build_root_key(settings)
    if resolve_l1 is None:
        # L1 keystores (issue 4): the parent ref of a BYOK/HYOK L2 version -> a connector to the customer's key.
        resolve_l1 = KeystoreResolver(
            root, allowed_modules=settings.pkcs11_module_list, timeout=settings.keystore_call_timeout_seconds
        )
    keyring = TenantKeyring(
        root,
        resolve_l1=resolve_l1,
        clock=clock,
        cache_ttl=settings.l2_cache_ttl_seconds,
        epoch_poll=settings.epoch_poll_seconds,
        grace=settings.l1_grace_seconds,
    )
    sink = audit or ChainedAuditSink(
        writer_id=settings.writer_id or None,
        clock=clock,
        wal_dir=audit_wal_dir,
        max_pending=settings.audit_max_pending,
        flush_max_delay=settings.audit_flush_seconds,
        authenticator=root,  # link MACs: the writer key is wrapped by the root key (KMS in AWS)
    )
    runtime = Runtime(settings, clock, root, Tenants(clock), keyring, sink)
    if isinstance(resolve_l1, KeystoreResolver):
        runtime.extras["keystore_resolver"] = resolve_l1
    if audit is None:
        # Security events also go to EventBridge; WAL-mode sinks checkpoint periodically (issue 11).
        # Imported here: openkcm.ops.audit imports this module.
        from openkcm.ops.audit import wire_sink

        wire_sink(runtime)
    return runtime
