"""Typed settings read once from the environment (``OPENKCM_*`` plus the standard AWS variables).

One model for every process — Lambda, KMIP worker, CLI — so that a deployment differs only in its
environment. The AWS endpoint is deliberately *not* a setting of ours: botocore already honours
``AWS_ENDPOINT_URL``, which is how the same code talks to moto locally and to AWS in production.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENKCM_", extra="ignore")

    table_prefix: str = Field("openkcm", pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    region: str = Field(default="us-east-1", validation_alias="AWS_REGION")
    data_dir: Path = Path(".openkcm")
    # "local" keeps versioned root keys as 0600 files in data_dir (the embedded default);
    # "aws-kms" uses the comma-separated KMS key ARNs in root_kms_key_ids (oldest first).
    root_key_provider: Literal["local", "aws-kms"] = "local"
    root_kms_key_ids: str = ""
    trust_domain: str = "openkcm.local"
    # AWS: the deployment CA lives in Secrets Manager as JSON {"ca_cert_pem", "ca_key_pem"} (DECISIONS 6);
    # empty: the embedded default's files in <data_dir>/pki.
    ca_secret_arn: str = ""
    # DECISIONS 7: unwrapped L2 keys live in memory at most this long; epochs are polled this often.
    l2_cache_ttl_seconds: float = Field(60.0, gt=0, le=300)
    epoch_poll_seconds: float = Field(5.0, gt=0, le=60)
    # Seed 002 REQ-030: how long a cached L2 stays usable after its L1 store became unreachable.
    l1_grace_seconds: float = Field(300.0, ge=0)
    # L1 keystores (DECISIONS 11): comma-separated PKCS#11 module paths the operator allows; a keystore
    # may only name one of these. Every keystore call has its own timeout; linking validates within a budget.
    pkcs11_modules: str = ""
    keystore_call_timeout_seconds: float = Field(10.0, gt=0, le=60)
    l1_validation_budget_seconds: float = Field(30.0, gt=0, le=120)
    # AWS BYOK/HYOK: comma-separated IAM role ARNs of every OpenKCM process that assumes a customer's role
    # (CMK API, rotation, KMIP tasks; set by the CDK stack). The trust template names all of them; empty:
    # only the role the calling process runs as.
    keystore_access_role_arns: str = ""
    event_bus_name: str = "openkcm-events"
    # Provisioning and rotation (issue 6). Empty queue URL / secret ARN / topic ARN: the local in-process
    # queue, the 0600 webhook-secret file in data_dir, and the DynamoDB outbox only.
    provision_queue_url: str = ""
    webhook_secret_arn: str = ""
    notification_topic_arn: str = ""
    ui_base_url: str = "http://127.0.0.1:8080"
    rotation_schedule: str = "rate(1 hour)"
    rewrap_batch_size: int = Field(100, ge=1, le=1000)
    shred_retention_days: float = Field(7.0, ge=0)
    writer_id: str = ""  # audit chain writer; defaults to host+pid when empty
    # Audit trail (issue 11). Checkpoints are signed with a 0600 P-256 key file in <data_dir>/audit
    # ("local") or a KMS ECC_NIST_P256 SIGN_VERIFY key ("aws-kms"). Archive segments go to
    # <data_dir>/audit/archive, or to S3 when audit_archive_bucket is set (the Object Lock bucket).
    audit_signer: Literal["local", "aws-kms"] = "local"
    audit_signing_key_id: str = ""
    audit_archive_bucket: str = ""
    audit_archive_prefix: str = "audit/"
    audit_retention_days: float = Field(90.0, ge=0)  # in DynamoDB before archive + expiry
    audit_checkpoint_seconds: float = Field(300.0, ge=0)  # 0: only the scheduled job checkpoints
    audit_max_pending: int = Field(20_000, ge=1, le=20_000)  # fail-closed bound; only stricter
    # True: a record is fsync'd before the operation is acknowledged; False: handed to the OS (survives a
    # killed process) and fsync'd with its link within audit_flush_seconds (a machine crash can lose that
    # window; on Fargate the WAL is task storage, lost with the task either way).
    audit_wal_fsync: bool = True
    # WAL mode: pending events become a link item once a full link (4,000 events) is pending or the
    # oldest waited this long; fewer, bigger items are what keeps the trail cheap under load.
    audit_flush_seconds: float = Field(1.0, gt=0, le=60)

    @property
    def root_kms_key_list(self) -> list[str]:
        return [k.strip() for k in self.root_kms_key_ids.split(",") if k.strip()]

    @property
    def keystore_access_role_list(self) -> list[str]:
        return [a.strip() for a in self.keystore_access_role_arns.split(",") if a.strip()]

    @property
    def pkcs11_module_list(self) -> list[str]:
        return [m.strip() for m in self.pkcs11_modules.split(",") if m.strip()]

    def table_name(self, logical: str) -> str:
        return f"{self.table_prefix}-{logical}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings of this process, read once (cold start for a Lambda)."""
    return Settings()
