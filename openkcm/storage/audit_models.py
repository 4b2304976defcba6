"""Items of the audit table beside the foundation's :class:`AuditBatchModel` (which owns the table, its
``tenant-time`` index and its TTL attribute).

- ``AuditLinkModel`` — one link of a writer's hash chain (``W#<writer>#<seq:012d>``): the foundation's
  batch item: compressed events (``events_z``) and their SHA-256 digests (``digests_bin``), which let
  verification name the one event that was altered, inserted or reordered inside a link.
- :class:`AuditCheckpointModel` — a signed checkpoint (``C#<seq:012d>``) joining the heads of a tenant's
  writer chains. No ``first_time``, so checkpoints stay out of the time index.
- :class:`AuditArchiveModel` — the manifest of an archived segment (``A#<seq:06d>``).
- :class:`AuditWriterKeyModel` — a writer's wrapped link-MAC key (``K#<writer>``).
- :class:`AuditSpanMarkerModel` — since when the tenant's links are span-bounded (``B#spans``).

The models follow whatever table :func:`openkcm.storage.bind_tables` gave ``AuditBatchModel``
(:func:`bind_audit_models` is called by every user before it touches them).
"""

from __future__ import annotations

from pynamodb.attributes import (
    BinaryAttribute,
    NumberAttribute,
    UnicodeAttribute,
)
from pynamodb.models import Model

from openkcm.storage.models import AuditBatchModel

# One link of a writer's hash chain is the foundation's batch item itself (it owns the table, the
# ``tenant-time`` index and the TTL attribute); the name says what the audit code uses it for.
AuditLinkModel = AuditBatchModel


class AuditCheckpointModel(Model):
    class Meta:
        table_name = AuditBatchModel.Meta.table_name
        region = AuditBatchModel.Meta.region

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    body_json = UnicodeAttribute()
    signature = UnicodeAttribute()
    key_id = UnicodeAttribute()
    created = UnicodeAttribute()


class AuditArchiveModel(Model):
    class Meta:
        table_name = AuditBatchModel.Meta.table_name
        region = AuditBatchModel.Meta.region

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    object_key = UnicodeAttribute()
    sha256 = UnicodeAttribute()
    writers_json = UnicodeAttribute()
    links = NumberAttribute()
    events = NumberAttribute()
    created = UnicodeAttribute()


class AuditWriterKeyModel(Model):
    """A writer's link-MAC key for one tenant (``K#<writer>``), wrapped by the root key (KMS in AWS), so
    only a process allowed to use that key can write links that verify."""

    class Meta:
        table_name = AuditBatchModel.Meta.table_name
        region = AuditBatchModel.Meta.region

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    writer = UnicodeAttribute()
    wrapped = BinaryAttribute(legacy_encoding=False)
    parent_ref = UnicodeAttribute()
    created = UnicodeAttribute()


class AuditSpanMarkerModel(Model):
    """``B#spans``: since when a tenant's links are written span-bounded (see ``chain.LINK_MAX_SPAN``).
    Readers narrow their time-index queries only for times well after it; links written before (by
    earlier versions) may span up to an hour."""

    class Meta:
        table_name = AuditBatchModel.Meta.table_name
        region = AuditBatchModel.Meta.region

    tenant_id = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    since = UnicodeAttribute()


AUDIT_MODELS: tuple[type[Model], ...] = (
    AuditLinkModel,
    AuditCheckpointModel,
    AuditArchiveModel,
    AuditWriterKeyModel,
    AuditSpanMarkerModel,
)


def bind_audit_models() -> None:
    """Point the audit item models at the table and region ``AuditBatchModel`` is bound to (cheap)."""
    table, region = AuditBatchModel.Meta.table_name, AuditBatchModel.Meta.region
    for model in AUDIT_MODELS:
        if model.Meta.table_name != table or model.Meta.region != region:
            model.Meta.table_name = table
            model.Meta.region = region
            model._connection = None
            for index in model._indexes.values():
                index._connection = None  # type: ignore[attr-defined]
