"""Storage: pynamodb models of the DynamoDB tables. Imports nothing of ours (bottom layer).

Every tenant-owned item has the tenant id as its partition key, so a query is scoped to one tenant by
construction: isolation by partition key is what replaces the seeds' PostgreSQL row-level security.
"""

from openkcm.storage.models import (
    ALL_MODELS,
    AccountModel,
    AuditBatchModel,
    CertificateModel,
    ConditionFailed,
    KeystoreModel,
    ManagedObjectModel,
    ObjectNameModel,
    TenantKeyModel,
    TenantModel,
    UsageModel,
    bind_tables,
    create_tables,
)

__all__ = [
    "ALL_MODELS",
    "AccountModel",
    "AuditBatchModel",
    "CertificateModel",
    "ConditionFailed",
    "KeystoreModel",
    "ManagedObjectModel",
    "ObjectNameModel",
    "TenantKeyModel",
    "TenantModel",
    "UsageModel",
    "bind_tables",
    "create_tables",
]
