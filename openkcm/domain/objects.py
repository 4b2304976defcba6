"""Managed objects of a tenant (KMIP's keys, secrets and opaque objects) over ``ManagedObjectModel``.

Rules kept here:
- **Tenant-scoped.** Every read and write names the tenant; the table's partition key is the tenant id,
  so an object of another tenant is simply not found. Object ids are ``<tenant-id>.<random hex>`` so an
  adapter can tell *that* a caller presented another tenant's identifier (and audit it) without any
  lookup outside the caller's partition changing the answer.
- **Never stored unwrapped.** Material is sealed through ``TenantKeyring.seal_object`` (AES-GCM under the
  tenant's current L2 version, AAD binding tenant, object id and L2 version) and opened on use.
  Derived objects (KMIP Derive Key) store no material at all, only how to derive it again (L4).
- **Lifecycle changes are conditional writes** that check the state read (and the item version); a lost
  race is a :class:`ConcurrentUpdate`, never a silent overwrite.
- **Names are indexed.** Each Name of an object has an index entry in the tenant's partition
  (``ObjectNameModel``), written in the same transaction as the object, so Locate by Name reads its
  matches instead of every object of the tenant (which made Locate cost a full partition read: 105 Locates/s
  against PyKMIP's 564 on the benchmark box). Objects stored before the index get their entries once per
  tenant, on its first Locate by Name (:meth:`ObjectStore.ensure_name_index`). An entry whose object no
  longer has that name can be left behind by a race; readers check the object's names, so it only costs a read.
- **Cached per tenant** for at most ``ttl`` seconds, keyed on the tenant's epoch as polled by the
  keyring (DECISIONS 7): a rotation, revocation or disable drops the tenant's cached objects at once.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from pynamodb.connection import Connection
from pynamodb.transactions import TransactWrite

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.domain.hierarchy import TenantKeyring
from openkcm.errors import ConcurrentUpdate, InvalidRequest, KeyUnavailable, NotFound
from openkcm.storage import ConditionFailed, ManagedObjectModel, ObjectNameModel
from openkcm.storage.models import NAME_INDEX_FROM, condition_guard

# KMIP states, by the names of kmip.core.enums.State.
PRE_ACTIVE, ACTIVE, DEACTIVATED, COMPROMISED = "PRE_ACTIVE", "ACTIVE", "DEACTIVATED", "COMPROMISED"
DESTROYED, DESTROYED_COMPROMISED = "DESTROYED", "DESTROYED_COMPROMISED"
STATES = frozenset({PRE_ACTIVE, ACTIVE, DEACTIVATED, COMPROMISED, DESTROYED, DESTROYED_COMPROMISED})

Attributes = dict[str, list[Any]]
# (base material, object) -> material, for objects that store a derivation recipe instead of material.
Deriver = Callable[[bytes, "ManagedObject"], bytes]


def new_object_id(tenant_id: str) -> str:
    return f"{tenant_id}.{uuid.uuid4().hex}"


def tenant_of_object_id(object_id: str) -> str:
    """The tenant an object id was issued for ('' when the id has no such form)."""
    head, sep, tail = object_id.partition(".")
    return head if sep and len(tail) == 32 else ""


@dataclass(frozen=True, slots=True)
class ManagedObject:
    tenant_id: str
    object_id: str
    object_type: str
    state: str
    attributes: Attributes
    names: tuple[str, ...]
    l2_version: int
    wrapped: bytes | None = field(repr=False)
    created_by: str
    created_at: datetime
    updated_at: datetime
    item_version: int

    def first(self, name: str, default: Any = None) -> Any:
        values = self.attributes.get(name)
        return values[0] if values else default

    @property
    def derived_from(self) -> dict[str, Any] | None:
        return self.first("_derived")


def _from_model(model: ManagedObjectModel) -> ManagedObject:
    return ManagedObject(
        tenant_id=model.tenant_id,
        object_id=model.object_id,
        object_type=model.object_type,
        state=model.state,
        attributes=json.loads(model.attributes_json or "{}"),
        names=tuple(model.names or ()),
        l2_version=int(model.l2_version or 0),
        wrapped=model.wrapped,
        created_by=model.created_by or "",
        created_at=model.created_at,
        updated_at=model.updated_at,
        item_version=int(model.version or 0),
    )


def _to_json(attributes: Attributes) -> str:
    return json.dumps(attributes, sort_keys=True, separators=(",", ":"))


_NAME_PREFIX = NAME_INDEX_FROM + "N#"
_NAMES_COMPLETE = NAME_INDEX_FROM + "N!complete"  # the tenant's objects before the index have entries


def _name_key(name: str, object_id: str = "") -> str:
    """A name's index key: a digest, so any name (up to the attribute limits) fits a sort key and a prefix
    matches exactly one name."""
    return f"{_NAME_PREFIX}{hashlib.sha256(name.encode()).hexdigest()[:40]}#{object_id}"


def _transaction() -> TransactWrite:
    return TransactWrite(connection=Connection(region=ManagedObjectModel.Meta.region))


@dataclass
class _TenantCache:
    epoch: int
    items: dict[str, tuple[float, ManagedObject]] = field(default_factory=dict)


class ObjectStore:
    def __init__(
        self,
        keyring: TenantKeyring,
        *,
        clock: Clock = SYSTEM_CLOCK,
        ttl: float = 5.0,
        max_per_tenant: int = 50_000,
    ) -> None:
        self.keyring = keyring
        self._clock = clock
        self._ttl = ttl
        self._max = max_per_tenant
        self._lock = threading.Lock()
        self._cache: dict[str, _TenantCache] = {}
        self._indexed: set[str] = set()  # tenants whose name index is complete (it stays so)
        self.deriver: Deriver | None = None

    # ---- cache ---------------------------------------------------------------------------------
    def _tenant_cache(self, tenant_id: str) -> _TenantCache:
        epoch, _ = self.keyring.tenant_state(tenant_id)
        with self._lock:
            cache = self._cache.get(tenant_id)
            if cache is None or cache.epoch != epoch:
                cache = self._cache[tenant_id] = _TenantCache(epoch)
            return cache

    def _remember(self, obj: ManagedObject) -> ManagedObject:
        with self._lock:
            cache = self._cache.get(obj.tenant_id)
            if cache is not None:
                if obj.state == PRE_ACTIVE:
                    # A passing state: clients Activate at once, often through another worker (libmongocrypt
                    # sends Create, Activate, Encrypt on three connections). Never answered from the cache,
                    # so no worker refuses a key as Pre-Active after another one activated it.
                    cache.items.pop(obj.object_id, None)
                    return obj
                if len(cache.items) >= self._max:
                    cache.items.pop(next(iter(cache.items)))
                cache.items[obj.object_id] = (self._clock.timestamp(), obj)
        return obj

    def forget(self, tenant_id: str, object_id: str) -> None:
        with self._lock:
            cache = self._cache.get(tenant_id)
            if cache is not None:
                cache.items.pop(object_id, None)

    # ---- reads ---------------------------------------------------------------------------------
    def get(self, tenant_id: str, object_id: str) -> ManagedObject:
        """The object, or NotFound (also for another tenant's id: the partition decides)."""
        cache = self._tenant_cache(tenant_id)
        now = self._clock.timestamp()
        hit = cache.items.get(object_id)
        if hit is not None and now - hit[0] < self._ttl:
            return hit[1]
        if len(object_id) > 200:
            raise NotFound("no such object")
        try:
            model = ManagedObjectModel.get(tenant_id, object_id, consistent_read=True)
        except ManagedObjectModel.DoesNotExist:
            raise NotFound("no such object") from None
        return self._remember(_from_model(model))

    def peek(self, tenant_id: str, object_id: str) -> ManagedObject | None:
        """The cached object when it is fresh and the tenant's epoch is known without polling; None
        otherwise (the caller then takes the path that may read the store)."""
        if not self.keyring.warm(tenant_id):
            return None
        epoch, _ = self.keyring.tenant_state(tenant_id)
        with self._lock:
            cache = self._cache.get(tenant_id)
            if cache is None or cache.epoch != epoch:
                return None
            hit = cache.items.get(object_id)
        if hit is None or self._clock.timestamp() - hit[0] >= self._ttl:
            return None
        return hit[1]

    def exists_elsewhere(self, tenant_id: str, object_id: str) -> bool:
        """Whether ``object_id`` names an object of ``tenant_id`` (used only to audit cross-tenant
        attempts; the caller's answer never depends on it)."""
        try:
            ManagedObjectModel.get(tenant_id, object_id)
        except ManagedObjectModel.DoesNotExist:
            return False
        return True

    def all(self, tenant_id: str) -> list[ManagedObject]:
        """Every object of a tenant, oldest first (Locate filters these)."""
        objects = [_from_model(m) for m in ManagedObjectModel.of_tenant(tenant_id, consistent_read=True)]
        objects.sort(key=lambda o: (o.created_at, o.object_id))
        return objects

    def named(self, tenant_id: str, name: str) -> list[ManagedObject]:
        """The tenant's objects with this Name, oldest first (as :meth:`all` orders them)."""
        found = []
        for entry in ObjectNameModel.query(tenant_id, ObjectNameModel.object_id.startswith(_name_key(name))):
            try:
                obj = self.get(tenant_id, entry.target)
            except NotFound:
                continue
            if name in obj.names:
                found.append(obj)
        found.sort(key=lambda o: (o.created_at, o.object_id))
        return found

    def ensure_name_index(self, tenant_id: str) -> bool:
        """Give the tenant's objects stored before the name index their entries, once (then mark the
        tenant complete). True when :meth:`named` can be trusted. An object created meanwhile by a
        writer of this version has its entries already; one created by an earlier version during a rolling
        deployment, after this read, would be missed (kmip_fargate/README.md says so)."""
        with self._lock:
            if tenant_id in self._indexed:
                return True
        try:
            ObjectNameModel.get(tenant_id, _NAMES_COMPLETE, consistent_read=True)
        except ObjectNameModel.DoesNotExist:
            with ObjectNameModel.batch_write() as batch:
                for item in ManagedObjectModel.of_tenant(tenant_id, consistent_read=True):
                    for name in set(item.names or ()):
                        batch.save(ObjectNameModel(tenant_id, _name_key(name, item.object_id), target=item.object_id))
            ObjectNameModel(tenant_id, _NAMES_COMPLETE).save()
        with self._lock:
            self._indexed.add(tenant_id)
        return True

    def material(self, obj: ManagedObject) -> bytes:
        """The object's plaintext material (opened under its L2 version, or derived again)."""
        recipe = obj.derived_from
        if recipe is not None:
            if self.deriver is None:
                raise KeyUnavailable("no deriver configured")
            base = self.get(obj.tenant_id, recipe["base"])
            return self.deriver(self.material(base), obj)
        if obj.wrapped is None:
            raise KeyUnavailable("the object has no material")
        return self.keyring.open_object(obj.tenant_id, obj.object_id, obj.l2_version, obj.wrapped)

    # ---- writes --------------------------------------------------------------------------------
    def create(
        self,
        tenant_id: str,
        *,
        object_type: str,
        material: bytes | None,
        attributes: Attributes,
        names: Iterable[str] = (),
        state: str = PRE_ACTIVE,
        created_by: str = "",
        object_id: str | None = None,
    ) -> ManagedObject:
        if state not in STATES:
            raise InvalidRequest("unknown state")
        object_id = object_id or new_object_id(tenant_id)
        now = self._clock.now()
        l2_version, wrapped = 0, None
        if material is not None:
            l2_version, wrapped = self.keyring.seal_object(tenant_id, object_id, material)
        model = ManagedObjectModel(
            tenant_id,
            object_id,
            object_type=object_type,
            state=state,
            wrapped=wrapped,
            l2_version=l2_version,
            attributes_json=_to_json(attributes),
            names=list(names),
            created_by=created_by,
            created_at=now,
            updated_at=now,
        )
        try:
            with condition_guard():
                if not model.names:
                    model.save(condition=ManagedObjectModel.object_id.does_not_exist())
                else:
                    with _transaction() as tx:
                        tx.save(model, condition=ManagedObjectModel.object_id.does_not_exist())
                        for name in set(model.names):
                            tx.save(ObjectNameModel(tenant_id, _name_key(name, object_id), target=object_id))
        except ConditionFailed:
            raise ConcurrentUpdate("an object with this id exists already") from None
        self._tenant_cache(tenant_id)
        return self._remember(_from_model(model))

    def update(
        self,
        obj: ManagedObject,
        *,
        state: str | None = None,
        attributes: Attributes | None = None,
        names: Iterable[str] | None = None,
        remove_material: bool = False,
    ) -> ManagedObject:
        """One conditional write: succeeds only if the item is still in the state and version read.

        A rotation's re-wrap moves an object's material to a new L2 version without touching its state,
        attributes or names; that write commutes with this one. So when the condition fails and a fresh
        read shows only the material moved, the write is retried on the fresh version instead of failing
        the client's request (rotation under load must cost zero failed requests)."""
        for _ in range(3):
            try:
                return self._update_once(obj, state, attributes, names, remove_material)
            except ConcurrentUpdate:
                try:
                    fresh = _from_model(ManagedObjectModel.get(obj.tenant_id, obj.object_id, consistent_read=True))
                except ManagedObjectModel.DoesNotExist:
                    raise NotFound("no such object") from None
                if (fresh.state, fresh.attributes, fresh.names) != (obj.state, obj.attributes, obj.names):
                    raise
                obj = replace(obj, item_version=fresh.item_version, wrapped=fresh.wrapped, l2_version=fresh.l2_version)
        return self._update_once(obj, state, attributes, names, remove_material)

    def _update_once(
        self,
        obj: ManagedObject,
        state: str | None,
        attributes: Attributes | None,
        names: Iterable[str] | None,
        remove_material: bool,
    ) -> ManagedObject:
        now = self._clock.now()
        model = ManagedObjectModel(obj.tenant_id, obj.object_id)
        model.version = obj.item_version
        actions = [ManagedObjectModel.updated_at.set(now)]
        if state is not None:
            if state not in STATES:
                raise InvalidRequest("unknown state")
            actions.append(ManagedObjectModel.state.set(state))
        if attributes is not None:
            actions.append(ManagedObjectModel.attributes_json.set(_to_json(attributes)))
        if names is not None:
            actions.append(ManagedObjectModel.names.set(list(names)))
        if remove_material:
            actions.append(ManagedObjectModel.wrapped.remove())
        gone = set(obj.names) - set(names) if names is not None else set()
        added = set(names) - set(obj.names) if names is not None else set()
        try:
            with condition_guard():
                if not (gone or added):
                    model.update(actions=actions, condition=ManagedObjectModel.state == obj.state)
                else:
                    with _transaction() as tx:
                        tx.update(model, actions=actions, condition=ManagedObjectModel.state == obj.state)
                        for name in gone:
                            tx.delete(ObjectNameModel(obj.tenant_id, _name_key(name, obj.object_id)))
                        for name in added:
                            entry = ObjectNameModel(obj.tenant_id, _name_key(name, obj.object_id), target=obj.object_id)
                            tx.save(entry)
        except ConditionFailed:
            self.forget(obj.tenant_id, obj.object_id)
            raise ConcurrentUpdate("the object changed meanwhile; retry") from None
        updated = replace(
            obj,
            state=state if state is not None else obj.state,
            attributes=attributes if attributes is not None else obj.attributes,
            names=tuple(names) if names is not None else obj.names,
            wrapped=None if remove_material else obj.wrapped,
            updated_at=now,
            item_version=int(model.version or obj.item_version + 1),
        )
        return self._remember(updated)
