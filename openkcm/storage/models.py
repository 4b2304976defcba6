"""pynamodb models. Table names are ``<prefix>-<logical name>``; ``bind_tables`` sets the prefix and
region for the process (the endpoint comes from botocore's standard ``AWS_ENDPOINT_URL``).

Several models share one table where their items belong to the same partition (a tenant's record, its
L2 versions and its certificates all live under ``tenant_id``), distinguished by the sort key prefix.
Lifecycle changes use ``VersionAttribute`` (optimistic locking) or explicit conditions; a failed
condition surfaces as :class:`ConditionFailed` so callers above never see pynamodb's exceptions.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import botocore.session
import pynamodb.connection.base as _pynamodb_connection_base
from pynamodb.attributes import (
    BinaryAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UTCDateTimeAttribute,
    VersionAttribute,
)
from pynamodb.exceptions import DeleteError, PutError, TransactWriteError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model


def _session_sharing_one_loader() -> botocore.session.Session:
    """pynamodb opens a new botocore session per model connection, and each session parses the DynamoDB
    service model JSON again: measured 8 x ~125 ms at every cold start. Sessions sharing one data
    loader parse it once per process."""
    session = botocore.session.get_session()
    global _SHARED_LOADER
    if _SHARED_LOADER is None:
        _SHARED_LOADER = session.get_component("data_loader")
    else:
        session.register_component("data_loader", _SHARED_LOADER)
    return session


_SHARED_LOADER = None
_pynamodb_connection_base.get_session = _session_sharing_one_loader

_DEFAULT_PREFIX = os.environ.get("OPENKCM_TABLE_PREFIX", "openkcm")
_DEFAULT_REGION = os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))


class ConditionFailed(Exception):
    """A conditional write found the item in another state than expected (lost-update guard)."""


@contextmanager
def condition_guard() -> Iterator[None]:
    """Turn pynamodb's conditional-check failures into :class:`ConditionFailed`."""
    try:
        yield
    except (PutError, UpdateError, DeleteError, TransactWriteError) as exc:
        cause = getattr(exc, "cause_response_code", None)
        if cause in ("ConditionalCheckFailedException", "TransactionCanceledException"):
            raise ConditionFailed(str(exc)) from exc
        raise


class AccountModel(Model):
    """A marketplace customer (e.g. ``acme-corp-12345``); owns tenants and keystores."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-accounts"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    account_id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(default="")
    status = UnicodeAttribute(default="active")
    created_at = UTCDateTimeAttribute()
    version = VersionAttribute()


class AccountTenantsIndex(GlobalSecondaryIndex["TenantModel"]):
    class Meta:
        index_name = "account-tenants"
        projection = AllProjection()

    account_id = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute(range_key=True)


class TenantModel(Model):
    """The tenant record (sort key ``TENANT``). ``epoch`` moves whenever cached keys of this tenant must
    be dropped everywhere (rotation, revocation, L1 change, disable): KMIP workers poll it."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    SORT_KEY = "TENANT"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=SORT_KEY)
    account_id = UnicodeAttribute()
    name = UnicodeAttribute(default="")
    region = UnicodeAttribute(default="")
    # Provisioning -> Ready | Failed; Ready <-> Disabled; -> Deleted (crypto-shredded later)
    status = UnicodeAttribute(default="Provisioning")
    status_reason = UnicodeAttribute(null=True)
    key_mode = UnicodeAttribute(default="platform-managed")  # platform-managed | byok | hyok
    l1_state = UnicodeAttribute(default="Inactive")  # Inactive | Active | Error
    l1_reason = UnicodeAttribute(null=True)
    l1_key_ref = UnicodeAttribute(null=True)
    current_l2_version = NumberAttribute(default=0)
    epoch = NumberAttribute(default=0)
    rotation_period_days = NumberAttribute(default=90)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    disabled_at = UTCDateTimeAttribute(null=True)
    version = VersionAttribute()

    account_index = AccountTenantsIndex()


class TenantKeyModel(Model):
    """One version of a tenant's L2 key, always stored wrapped by its parent (root key or L1).
    Sort key ``L2#<version:08d>`` so versions sort numerically inside the tenant's partition."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    l2_version = NumberAttribute()
    wrapped = BinaryAttribute(legacy_encoding=False, null=True)
    parent_kind = UnicodeAttribute()  # "root" | "l1"
    parent_ref = UnicodeAttribute()
    state = UnicodeAttribute(default="active")  # active | retired | destroyed
    created_at = UTCDateTimeAttribute()
    retired_at = UTCDateTimeAttribute(null=True)
    destroyed_at = UTCDateTimeAttribute(null=True)
    version = VersionAttribute()

    @staticmethod
    def sort_key(l2_version: int) -> str:
        return f"L2#{l2_version:08d}"


class CertificateModel(Model):
    """A client certificate issued for one service of a tenant (``CERT#<serial hex>``)."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    serial = UnicodeAttribute()
    service_id = UnicodeAttribute()
    subject = UnicodeAttribute(default="")
    issued_at = UTCDateTimeAttribute()
    not_after = UTCDateTimeAttribute()
    revoked_at = UTCDateTimeAttribute(null=True)
    revoked_reason = UnicodeAttribute(null=True)

    @staticmethod
    def sort_key(serial_hex: str) -> str:
        return f"CERT#{serial_hex}"


class ManagedObjectModel(Model):
    """A KMIP managed object of a tenant. Key material is only ever the ``wrapped`` blob (AES-GCM under
    the tenant's L2 version ``l2_version``); KMIP attributes are kept as canonical JSON."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-objects"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    object_id = UnicodeAttribute(range_key=True)
    object_type = UnicodeAttribute()
    state = UnicodeAttribute(default="PRE_ACTIVE")
    wrapped = BinaryAttribute(legacy_encoding=False, null=True)
    l2_version = NumberAttribute(default=0)
    attributes_json = UnicodeAttribute(default="{}")
    names = ListAttribute(of=UnicodeAttribute, default=list)
    created_by = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    last_used_at = UTCDateTimeAttribute(null=True)
    version = VersionAttribute()

    @classmethod
    def of_tenant(cls, tenant_id: str, **kwargs: Any) -> Any:
        """Query the tenant's objects, not the name index entries sharing the partition (keys from ``~``)."""
        return cls.query(tenant_id, cls.object_id < NAME_INDEX_FROM, **kwargs)


NAME_INDEX_FROM = "~"  # object ids are ``<tenant>.<hex>``: every one sorts before this


class ObjectNameModel(Model):
    """An entry of the objects table's name index (``~N#<digest of the name>#<object id>``): written in the
    same transaction as the object whose Name it is, so Locate by Name reads its matches instead of the
    tenant's whole partition. ``~`` sorts after every object id (``<tenant>.<hex>``); readers of objects
    query the ``<tenant>.`` prefix. The key attribute names are the table's."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-objects"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    object_id = UnicodeAttribute(range_key=True)  # the index key, not an object id
    target = UnicodeAttribute(default="")  # the object the name belongs to ("" for the completeness mark)


class KeystoreModel(Model):
    """An L1 keystore connection of an account. ``config_json`` never holds a secret: credentials are
    in ``secret_wrapped``, encrypted by the root key."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-keystores"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    account_id = UnicodeAttribute(hash_key=True)
    keystore_id = UnicodeAttribute(range_key=True)
    provider = UnicodeAttribute()  # aws-kms | azure-key-vault | gcp-kms | pkcs11
    name = UnicodeAttribute(default="")
    config_json = UnicodeAttribute(default="{}")
    secret_wrapped = BinaryAttribute(legacy_encoding=False, null=True)
    status = UnicodeAttribute(default="Untested")
    status_reason = UnicodeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()


class AuditTimeIndex(GlobalSecondaryIndex["AuditBatchModel"]):
    class Meta:
        index_name = "tenant-time"
        projection = AllProjection()

    tenant_id = UnicodeAttribute(hash_key=True)
    first_time = UnicodeAttribute(range_key=True)


class AuditBatchModel(Model):
    """A batch of audit events of one tenant from one writer: a link of that writer's hash chain.

    Sort key ``W#<writer>#<seq:012d>`` (chain links) or ``C#<time>#<writer>`` (signed checkpoints).
    Packing events per item and chaining per writer is what lets many writers append concurrently
    without a per-tenant counter (see ``openkcm.domain.audit``)."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-audit"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    writer = UnicodeAttribute()
    seq = NumberAttribute()
    prev_hash = UnicodeAttribute()
    hash = UnicodeAttribute()
    # zlib (level 1) of the JSON array of the events' canonical encodings: ~20x smaller than the JSON
    # itself, which made serialising and storing big links most of the audit's cost (bench/README.md).
    events_z = BinaryAttribute(legacy_encoding=False, null=True)
    digests_bin = BinaryAttribute(legacy_encoding=False, null=True)  # each event's 32-byte SHA-256, in order
    # Links written before the compressed format (read, never written): the events as JSON, hex digests.
    events_json = UnicodeAttribute(null=True)
    digests = ListAttribute(of=UnicodeAttribute, null=True)
    mac = UnicodeAttribute(null=True)  # the writer's link MAC (key wrapped by the root key)
    event_count = NumberAttribute()
    first_time = UnicodeAttribute()
    last_time = UnicodeAttribute()
    kinds = ListAttribute(of=UnicodeAttribute, default=list)
    expire_at = TTLAttribute(null=True)

    time_index = AuditTimeIndex()


class UsageModel(Model):
    """Usage counter: operations per tenant, day, operation and service (``U#<day>#<op>#<service>``),
    updated with atomic ADD so concurrent writers never lose a count."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-usage"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    day = UnicodeAttribute()
    operation = UnicodeAttribute()
    service = UnicodeAttribute()
    count = NumberAttribute(default=0)
    last_seen = UnicodeAttribute(null=True)


class ProvisioningModel(Model):
    """Progress of a tenant's provisioning and deletion (sort key ``PROVISION``): the steps done, the
    attempts made, the last failure, and when a deleted tenant is due for crypto-shredding. Deliberately
    no ``account_id`` attribute, so the item stays out of the ``account-tenants`` index."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    SORT_KEY = "PROVISION"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=SORT_KEY)
    customer = UnicodeAttribute()
    event_id = UnicodeAttribute(default="")
    steps_done = ListAttribute(of=UnicodeAttribute, default=list)
    attempts = NumberAttribute(default=0)
    last_error = UnicodeAttribute(null=True)
    deleted_at = UTCDateTimeAttribute(null=True)
    # The marketplace's own time of the deleting event (None for a deletion through the CMK API: our clock
    # and the marketplace's are not compared). An enable from before it must not undo it.
    deleted_event_at = UTCDateTimeAttribute(null=True)
    enabled_event_at = UTCDateTimeAttribute(null=True)  # the latest marketplace enable's own time
    restoring_at = UTCDateTimeAttribute(null=True)  # a restore cleared the deletion and is not finished
    shred_after = UTCDateTimeAttribute(null=True)
    shredded_at = UTCDateTimeAttribute(null=True)
    # Set (on a deleted tenant only) before the first L2 version is destroyed; a restore needs it absent.
    shred_started_at = UTCDateTimeAttribute(null=True)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    version = VersionAttribute()


class TrustEntryModel(Model):
    """A tenant's entry in the deployment's trust domain (sort key ``TRUST``): the SPIFFE prefix its
    client certificates carry and the certificate template the CA issues them from."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    SORT_KEY = "TRUST"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=SORT_KEY)
    spiffe_prefix = UnicodeAttribute()
    template_json = UnicodeAttribute(default="{}")
    created_at = UTCDateTimeAttribute()


class NotificationModel(Model):
    """An outbox entry for the account's users (``NOTE#<time>#<id>``): provisioning Ready/Failed and the
    like, with the CMK UI link. The UI and ``openkcm local`` read it; in AWS it is also sent to SNS."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    customer = UnicodeAttribute()
    kind = UnicodeAttribute()
    subject = UnicodeAttribute()
    message = UnicodeAttribute()
    link = UnicodeAttribute(default="")
    created_at = UTCDateTimeAttribute()


class TombstoneModel(Model):
    """Signed proof that a tenant's L2 versions were destroyed (sort key ``TOMBSTONE``)."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-tenants"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    SORT_KEY = "TOMBSTONE"

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True, default=SORT_KEY)
    statement_json = UnicodeAttribute()
    signature = UnicodeAttribute()
    algorithm = UnicodeAttribute()
    key_id = UnicodeAttribute()
    created_at = UTCDateTimeAttribute()


class IdempotencyModel(Model):
    """The table that Powertools idempotency persists to (key ``id``, TTL ``expiration``); the webhook's
    replay guard keeps its seen signatures here too."""

    class Meta:
        table_name = f"{_DEFAULT_PREFIX}-idempotency"
        region = _DEFAULT_REGION
        billing_mode = "PAY_PER_REQUEST"

    id = UnicodeAttribute(hash_key=True)
    expiration = NumberAttribute(null=True)


ALL_MODELS: tuple[type[Model], ...] = (
    AccountModel,
    TenantModel,
    TenantKeyModel,
    CertificateModel,
    ManagedObjectModel,
    ObjectNameModel,
    KeystoreModel,
    AuditBatchModel,
    UsageModel,
    ProvisioningModel,
    TrustEntryModel,
    NotificationModel,
    TombstoneModel,
    IdempotencyModel,
)

# One model per physical table decides its key schema and indexes when it is created.
_TABLE_OWNERS: tuple[type[Model], ...] = (
    AccountModel,
    TenantModel,
    ManagedObjectModel,
    KeystoreModel,
    AuditBatchModel,
    UsageModel,
    IdempotencyModel,
)

_LOGICAL_NAMES = {
    AccountModel: "accounts",
    TenantModel: "tenants",
    TenantKeyModel: "tenants",
    CertificateModel: "tenants",
    ManagedObjectModel: "objects",
    ObjectNameModel: "objects",
    KeystoreModel: "keystores",
    AuditBatchModel: "audit",
    UsageModel: "usage",
    ProvisioningModel: "tenants",
    TrustEntryModel: "tenants",
    NotificationModel: "tenants",
    TombstoneModel: "tenants",
    IdempotencyModel: "idempotency",
}


def table_names(prefix: str) -> dict[str, str]:
    """Logical name -> physical table name for a prefix (used by the CDK app and the CLI too)."""
    return {logical: f"{prefix}-{logical}" for logical in sorted(set(_LOGICAL_NAMES.values()))}


def bind_tables(prefix: str, region: str) -> None:
    """Point every model at ``<prefix>-<table>`` in ``region``. Drops cached connections so the
    process picks up the current endpoint settings."""
    for model, logical in _LOGICAL_NAMES.items():
        model.Meta.table_name = f"{prefix}-{logical}"
        model.Meta.region = region
        model._connection = None
        for index in model._indexes.values():
            index._connection = None  # type: ignore[attr-defined]


def _existing_tables(region: str) -> set[str]:
    """One ListTables walk (a DescribeTable per missing table costs pynamodb's retries on each 400)."""
    from pynamodb.connection import Connection

    connection, names, start = Connection(region=region), set(), None
    while True:
        page = connection.list_tables(exclusive_start_table_name=start)
        names.update(page.get("TableNames", []))
        start = page.get("LastEvaluatedTableName")
        if not start:
            return names


def create_tables(wait: bool = True, timeout: float = 300.0) -> list[str]:
    """Create every table that does not exist yet (idempotent). Returns the names created.

    Polls with a short, growing interval instead of pynamodb's fixed sleep: against moto the tables are
    active at once, against DynamoDB it takes seconds either way."""
    existing = _existing_tables(AccountModel.Meta.region)
    created = [model for model in _TABLE_OWNERS if model.Meta.table_name not in existing]
    for model in created:
        model.create_table(wait=False)
    if wait or AuditBatchModel in created:
        deadline = time.monotonic() + timeout
        for model in created:
            delay = 0.02
            while model.describe_table().get("TableStatus") != "ACTIVE":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"table {model.Meta.table_name} did not become active")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
    if AuditBatchModel in created:
        AuditBatchModel._get_connection().connection.update_time_to_live(
            AuditBatchModel.Meta.table_name, "expire_at"
        )
    if IdempotencyModel in created:
        IdempotencyModel._get_connection().connection.update_time_to_live(
            IdempotencyModel.Meta.table_name, "expiration"
        )
    return [model.Meta.table_name for model in created]
