"""Request bodies of the CMK API. Every model refuses unknown fields (``extra="forbid"``) so a typo is a
400, not a silently ignored setting. Powertools turns these into the OpenAPI document's schemas."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TENANT_ID = r"^[a-z0-9](?:[a-z0-9-]{1,61}[a-z0-9])$"
SERVICE_ID = r"^[A-Za-z0-9._-]{1,64}$"
KEYSTORE_PROVIDERS = ("aws-kms", "azure-key-vault", "gcp-kms", "pkcs11")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)


class TenantCreate(Strict):
    name: str = Field("", max_length=128, description="display name")
    region: str = Field("", max_length=32, pattern=r"^[a-z0-9-]*$", description="AWS region of the tenant")
    tenant_id: str | None = Field(None, pattern=TENANT_ID, description="chosen id (default: generated)")


class TenantDisable(Strict):
    reason: str = Field("", max_length=256)


class TenantEnable(Strict):
    pass


class TenantDelete(Strict):
    confirm: str = Field(..., min_length=1, max_length=64, description="must repeat the tenant id")
    retention_days: int | None = Field(
        None, ge=0, le=30, description="days before the L2 versions are destroyed (default 7; 0 = now)"
    )


class CertificateIssue(Strict):
    service_id: str = Field(..., pattern=SERVICE_ID)
    csr: str = Field(..., min_length=64, max_length=16384, description="PEM certificate signing request")
    validity_days: int = Field(365, ge=1, le=825)


class CertificateRevoke(Strict):
    reason: str = Field("", max_length=256)


class RotationPolicy(Strict):
    rotation_period_days: int = Field(..., ge=1, le=3650)


class RotateNow(Strict):
    """An empty object: rotation takes no options."""


class KeystoreCreate(Strict):
    provider: Literal["aws-kms", "azure-key-vault", "gcp-kms", "pkcs11"]
    name: str = Field(..., min_length=1, max_length=128)
    config: dict[str, Any] = Field(default_factory=dict, description="non-secret connection settings")
    secrets: dict[str, str] = Field(default_factory=dict, description="credentials; stored wrapped, never returned")


class KeystoreUpdate(Strict):
    name: str | None = Field(None, min_length=1, max_length=128)
    config: dict[str, Any] | None = None
    secrets: dict[str, str | None] | None = Field(None, description="fields to set; null or empty removes one")


class KeystoreTest(Strict):
    key_ref: str | None = Field(None, min_length=1, max_length=2048)


class L1Link(Strict):
    key_ref: str = Field(..., min_length=1, max_length=2048, description="key id/ARN/URL/label in the keystore")
    tenant_ids: list[Annotated[str, Field(pattern=TENANT_ID)]] = Field(..., min_length=1, max_length=100, description="tenants to assign and activate")


class ReturnToPlatform(Strict):
    confirm: bool = Field(..., description="must be true: re-wraps every L2 version under the platform root key")


class KeyImportStart(Strict):
    description: str = Field("", max_length=256)


class KeyImportComplete(Strict):
    key_ref: str = Field(..., min_length=1, max_length=2048)
    import_token: str = Field(..., min_length=1, max_length=8192, description="base64, from the start call")
    encrypted_key_material: str = Field(..., min_length=1, max_length=8192,
                                        description="base64 key material wrapped on the customer's side")
