"""The key hierarchy: the one owner of a tenant's L2 key (DECISIONS 2), of how L3 object material is
sealed under it, and of how L4 per-operation keys are derived.

    L1 customer master key (keystore) ──wraps──> L2 tenant key, versioned (TenantKeyModel)
    internal root key (while no L1)  ──wraps──>        │
                                                      └──seals──> L3 object material (ManagedObjectModel)
                                                                        └──HKDF──> L4, never stored

Rules kept here:
- No key is stored unwrapped. L2 versions are wrapped by their parent with a context naming tenant and
  version; L3 material is AES-GCM sealed under one L2 version with AAD binding tenant, object and version.
- Rotation adds a version and never deletes one that still seals objects: old data stays readable.
- Unwrapped L2 keys are cached at most ``cache_ttl`` seconds; every ``epoch_poll`` seconds a tenant's
  epoch is read and its cache dropped when it moved (DECISIONS 7).
- When a parent is unreachable, a key unwrapped within the last ``grace`` seconds stays usable; after that
  everything of that tenant fails closed (seed 002 REQ-030). An epoch change (revocation, L1 change)
  drops the cache at once: grace covers outages, never decisions.
"""

from __future__ import annotations

import hmac
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pynamodb.connection import Connection
from pynamodb.transactions import TransactWrite

from openkcm.clock import SYSTEM_CLOCK, Clock
from openkcm.domain.envelope import binding, open_sealed, seal
from openkcm.domain.rootkey import RootKeyProvider
from openkcm.domain.wrapping import WrappingKey
from openkcm.errors import ConcurrentUpdate, IntegrityFailure, InvalidRequest, KeyUnavailable, NotFound
from openkcm.storage import ConditionFailed, TenantKeyModel, TenantModel
from openkcm.storage.models import condition_guard

L2_BYTES = 32
PARENT_ROOT = "root"
PARENT_L1 = "l1"

# Resolves the parent of an L2 version that is wrapped by an L1 key: (tenant_id, parent_ref) -> key.
L1Resolver = Callable[[str, str], WrappingKey]


def no_l1_keystores(tenant_id: str, parent_ref: str) -> WrappingKey:
    raise KeyUnavailable("this process has no keystore connectors configured")


@dataclass(frozen=True)
class L2Key:
    tenant_id: str
    version: int
    material: bytes = field(repr=False)


@dataclass
class _Cached:
    key: L2Key
    unwrapped_at: float


def l2_context(tenant_id: str, version: int) -> dict[str, str]:
    return {"tenant_id": tenant_id, "l2_version": str(version), "purpose": "openkcm-l2"}


def object_binding(tenant_id: str, object_id: str, l2_version: int) -> bytes:
    return binding("openkcm/l3", {"tenant": tenant_id, "object": object_id, "l2": l2_version})


def derive_l4(l3_material: bytes, context: bytes, length: int = 32, salt: bytes | None = None) -> bytes:
    """L4: a per-record/per-operation key derived on demand with HKDF-SHA256 and never stored."""
    if not 16 <= length <= 64:
        raise InvalidRequest("derived key length must be 16 to 64 bytes")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=context).derive(l3_material)


class TenantKeyring:
    def __init__(
        self,
        root: RootKeyProvider,
        *,
        resolve_l1: L1Resolver = no_l1_keystores,
        clock: Clock = SYSTEM_CLOCK,
        cache_ttl: float = 60.0,
        epoch_poll: float = 5.0,
        grace: float = 300.0,
    ) -> None:
        self.root = root
        self._resolve_l1 = resolve_l1
        self._clock = clock
        self._ttl = cache_ttl
        self._epoch_poll = epoch_poll
        self._grace = grace
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, int], _Cached] = {}
        self._swept_at = 0.0
        self._tenant_seen: dict[str, tuple[float, int, int]] = {}  # tenant -> (checked_at, epoch, current)
        self._tenant_status: dict[str, str] = {}  # tenant -> status as last polled

    # ---- parents -------------------------------------------------------------------------------
    def parent_of(self, record: TenantKeyModel) -> WrappingKey:
        if record.parent_kind == PARENT_ROOT:
            return self.root
        return self._resolve_l1(record.tenant_id, record.parent_ref)

    # ---- L2 lifecycle --------------------------------------------------------------------------
    def create_first_version(self, tenant_id: str) -> int:
        """Give a new tenant L2 version 1 under the root key ("platform-managed"). Idempotent."""
        tenant = TenantModel.get(tenant_id, TenantModel.SORT_KEY)
        if tenant.current_l2_version:
            return int(tenant.current_l2_version)
        return self._add_version(tenant, self.root, PARENT_ROOT)

    def rotate(self, tenant_id: str) -> int:
        """Add a new L2 version under the parent of the current one and make it current."""
        tenant = TenantModel.get(tenant_id, TenantModel.SORT_KEY)
        if not tenant.current_l2_version:
            raise NotFound("tenant has no L2 key yet")
        current = self.record(tenant_id, int(tenant.current_l2_version))
        kind = current.parent_kind
        parent = self.root if kind == PARENT_ROOT else self.parent_of(current)
        return self._add_version(tenant, parent, kind)

    def _add_version(self, tenant: TenantModel, parent: WrappingKey, parent_kind: str) -> int:
        version = int(tenant.current_l2_version) + 1
        material = os.urandom(L2_BYTES)
        now = self._clock.now()
        record = TenantKeyModel(
            tenant.tenant_id,
            TenantKeyModel.sort_key(version),
            l2_version=version,
            wrapped=parent.wrap(material, l2_context(tenant.tenant_id, version)),
            parent_kind=parent_kind,
            parent_ref=parent.ref,
            created_at=now,
        )
        try:
            with condition_guard(), TransactWrite(connection=Connection(region=TenantModel.Meta.region)) as tx:
                tx.save(record, condition=TenantKeyModel.sk.does_not_exist())
                tx.update(
                    tenant,
                    actions=[
                        TenantModel.current_l2_version.set(version),
                        TenantModel.epoch.add(1),
                        TenantModel.updated_at.set(now),
                    ],
                    condition=TenantModel.current_l2_version == version - 1,
                )
        except ConditionFailed:
            raise ConcurrentUpdate("another rotation of this tenant's L2 key won; retry") from None
        self.invalidate(tenant.tenant_id)
        return version

    def record(self, tenant_id: str, version: int) -> TenantKeyModel:
        try:
            return TenantKeyModel.get(tenant_id, TenantKeyModel.sort_key(version))
        except TenantKeyModel.DoesNotExist:
            raise KeyUnavailable(f"L2 version {version} of this tenant does not exist") from None

    def records(self, tenant_id: str) -> list[TenantKeyModel]:
        return list(TenantKeyModel.query(tenant_id, TenantKeyModel.sk.startswith("L2#")))

    def rewrap_version(self, tenant_id: str, version: int, parent: WrappingKey, parent_kind: str) -> bool:
        """Re-wrap one L2 version's unchanged material under ``parent`` (e.g. the newest root key version
        after a root rotation), with a conditional write on the record's version. Returns False when there
        is nothing to do (destroyed, wrapped by ``parent`` already, or wrapped by another *kind* of parent
        by now). Changing a tenant's parent *kind* (platform-managed <-> BYOK/HYOK) is the keystores'
        change-parent operation, never this: a root re-wrap racing a BYOK link must not undo the link."""
        record = self.record(tenant_id, version)
        if record.state == "destroyed" or record.wrapped is None:
            return False
        if record.parent_kind != parent_kind:  # re-parented since the caller listed it
            return False
        if record.parent_ref == parent.ref:
            return False
        context = l2_context(tenant_id, version)
        material = self.parent_of(record).unwrap(record.wrapped, context)
        blob = parent.wrap(material, context)
        if not hmac.compare_digest(parent.unwrap(blob, context), material):  # the data must stay readable
            raise IntegrityFailure("the re-wrapped L2 version does not open again; nothing was written")
        try:
            with condition_guard():
                record.update(
                    actions=[
                        TenantKeyModel.wrapped.set(blob),
                        TenantKeyModel.parent_kind.set(parent_kind),
                        TenantKeyModel.parent_ref.set(parent.ref),
                    ]
                )
        except ConditionFailed:
            raise ConcurrentUpdate("this L2 version changed meanwhile; retry") from None
        return True

    # ---- unwrapped keys (cached) ---------------------------------------------------------------
    def current(self, tenant_id: str) -> L2Key:
        return self.version(tenant_id, self._current_version(tenant_id))

    def version(self, tenant_id: str, version: int) -> L2Key:
        self._check_epoch(tenant_id)
        now = self._clock.timestamp()
        with self._lock:
            cached = self._cache.get((tenant_id, version))
        if cached and now - cached.unwrapped_at < self._ttl:
            return cached.key
        try:
            key = self._unwrap(tenant_id, version)
        except KeyUnavailable:
            if cached and now - cached.unwrapped_at < self._ttl + self._grace:
                return cached.key  # parent unreachable: keep serving within the grace period
            self._evict_expired(now)  # past the grace period the plaintext key leaves memory too
            raise
        with self._lock:
            self._cache[(tenant_id, version)] = _Cached(key, now)
        if now - self._swept_at > self._ttl:
            self._evict_expired(now)
        return key

    def _evict_expired(self, now: float) -> None:
        """Drop every unwrapped key past its TTL and grace period: an expired entry was only skipped, so
        a key whose L1 was disabled stayed in process memory indefinitely."""
        with self._lock:
            self._swept_at = now
            for key in [k for k, c in self._cache.items() if now - c.unwrapped_at >= self._ttl + self._grace]:
                del self._cache[key]

    def _unwrap(self, tenant_id: str, version: int) -> L2Key:
        record = self.record(tenant_id, version)
        if record.state == "destroyed" or record.wrapped is None:
            raise KeyUnavailable("this L2 version was destroyed")
        material = self.parent_of(record).unwrap(record.wrapped, l2_context(tenant_id, version))
        return L2Key(tenant_id, version, material)

    def _current_version(self, tenant_id: str) -> int:
        self._check_epoch(tenant_id)
        with self._lock:
            seen = self._tenant_seen.get(tenant_id)
        if seen is None or not seen[2]:
            raise KeyUnavailable("tenant has no L2 key")
        return seen[2]

    def _check_epoch(self, tenant_id: str) -> None:
        now = self._clock.timestamp()
        with self._lock:
            seen = self._tenant_seen.get(tenant_id)
        if seen is not None and now - seen[0] < self._epoch_poll:
            return
        try:
            tenant = TenantModel.get(tenant_id, TenantModel.SORT_KEY)
        except TenantModel.DoesNotExist:
            self.invalidate(tenant_id)
            raise NotFound("no such tenant") from None
        epoch, current = int(tenant.epoch), int(tenant.current_l2_version)
        with self._lock:
            self._tenant_status[tenant_id] = str(tenant.status)
            if seen is not None and seen[1] != epoch:
                self._drop(tenant_id)
            self._tenant_seen[tenant_id] = (now, epoch, current)

    def tenant_state(self, tenant_id: str) -> tuple[int, str]:
        """(epoch, status) of a tenant as last polled, at most ``epoch_poll`` seconds old. Lets a KMIP
        worker key its own caches (objects, certificates) on the same epoch poll instead of a second one."""
        self._check_epoch(tenant_id)
        with self._lock:
            seen = self._tenant_seen.get(tenant_id)
            status = self._tenant_status.get(tenant_id, "")
        return (seen[1] if seen else -1), status

    def warm(self, tenant_id: str, version: int | None = None) -> bool:
        """True when ``tenant_state`` (and ``version(tenant_id, version)`` when given) would be answered
        from memory right now, without a store or parent call: lets an adapter serve a request on its
        event loop without blocking it."""
        now = self._clock.timestamp()
        with self._lock:
            seen = self._tenant_seen.get(tenant_id)
            if seen is None or now - seen[0] >= self._epoch_poll:
                return False
            if version is None:
                return True
            cached = self._cache.get((tenant_id, version))
        return cached is not None and now - cached.unwrapped_at < self._ttl

    def invalidate(self, tenant_id: str) -> None:
        """Drop everything cached of a tenant (rotation, revocation, L1 change, disable)."""
        with self._lock:
            self._drop(tenant_id)
            self._tenant_seen.pop(tenant_id, None)

    def _drop(self, tenant_id: str) -> None:
        for key in [k for k in self._cache if k[0] == tenant_id]:
            del self._cache[key]

    # ---- L3 objects ----------------------------------------------------------------------------
    def seal_object(self, tenant_id: str, object_id: str, material: bytes) -> tuple[int, bytes]:
        key = self.current(tenant_id)
        return key.version, seal(key.material, material, object_binding(tenant_id, object_id, key.version))

    def open_object(self, tenant_id: str, object_id: str, l2_version: int, blob: bytes) -> bytes:
        key = self.version(tenant_id, l2_version)
        return open_sealed(key.material, blob, object_binding(tenant_id, object_id, l2_version))

    def reseal_object(self, tenant_id: str, object_id: str, l2_version: int, blob: bytes) -> tuple[int, bytes]:
        """Move one object's material to the current L2 version (rotation's re-wrap step)."""
        return self.seal_object(tenant_id, object_id, self.open_object(tenant_id, object_id, l2_version, blob))

    # ---- crypto-shredding ----------------------------------------------------------------------
    def destroy_all(self, tenant_id: str) -> list[int]:
        """Destroy every L2 version: all of the tenant's objects become unrecoverable."""
        destroyed = []
        for record in self.records(tenant_id):
            if record.state != "destroyed":
                with condition_guard():
                    record.update(
                        actions=[
                            TenantKeyModel.wrapped.remove(),
                            TenantKeyModel.state.set("destroyed"),
                            TenantKeyModel.destroyed_at.set(self._clock.now()),
                        ]
                    )
                destroyed.append(int(record.l2_version))
        self.invalidate(tenant_id)
        return destroyed

