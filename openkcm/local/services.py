"""The services ``openkcm local up`` starts after AWS, tables, root key and CA are ready.

Each feature adds its own factory to ``_FACTORIES`` (import inside the factory, so a missing optional
dependency of one service never stops the others from being listed). A service's ``start`` returns the
details to print (URLs, ports, certificate paths).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from openkcm.local.stack import LocalStack


class LocalService(Protocol):
    name: str

    def start(self, stack: LocalStack) -> dict[str, Any]: ...

    def healthy(self) -> bool: ...

    def stop(self) -> None: ...


_FACTORIES: list[Callable[[], LocalService]] = []


def _provisioning() -> LocalService:
    from openkcm.local.provision_service import ProvisioningService

    return ProvisioningService()


def _rotation() -> LocalService:
    from openkcm.local.provision_service import RotationScheduleService

    return RotationScheduleService()


_FACTORIES += [_provisioning, _rotation]  # issue 6: marketplace worker queue, rotation schedule


def _api() -> LocalService:
    from openkcm.local.http_adapter import ApiService

    return ApiService()


_FACTORIES.append(_api)  # issue 5: CMK API + web UI + local OIDC issuer on ports["api"] (default 8080)


def _kmip() -> LocalService:
    from openkcm.local.kmip_service import KmipService

    return KmipService()


_FACTORIES.append(_kmip)  # issue 3: KMIP listener (mTLS) on ports["kmip"] (default 5696)


def _audit() -> LocalService:
    from openkcm.local.audit_service import AuditScheduleService

    return AuditScheduleService()


_FACTORIES.append(_audit)  # issue 11: audit checkpoints and archive on a schedule


def registered_services() -> list[LocalService]:
    return [factory() for factory in _FACTORIES]
