"""One root error and flat subclasses named after what failed.

Each class carries the HTTP status and the KMIP result reason an adapter answers with, so that every
adapter maps errors in exactly one place and the domain never imports a protocol. ``kmip_reason`` is the
name of a member of KMIP's Result Reason enumeration (``kmip.core.enums.ResultReason``).
"""

from __future__ import annotations


class OpenKCMError(Exception):
    http_status = 500
    kmip_reason = "GENERAL_FAILURE"
    code = "internal_error"

    def __init__(self, message: str = "", **details: object) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details

    def to_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"error": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return body


class InvalidRequest(OpenKCMError):
    """The request is malformed or a field has an invalid value."""

    http_status = 400
    kmip_reason = "INVALID_FIELD"
    code = "invalid_request"


class NotFound(OpenKCMError):
    """No such object (or it belongs to somebody else: the two are indistinguishable on purpose)."""

    http_status = 404
    kmip_reason = "ITEM_NOT_FOUND"
    code = "not_found"


class PermissionDenied(OpenKCMError):
    """The caller is not allowed to do this."""

    http_status = 403
    kmip_reason = "PERMISSION_DENIED"
    code = "permission_denied"


class Unauthenticated(OpenKCMError):
    """No valid credential was presented."""

    http_status = 401
    kmip_reason = "AUTHENTICATION_NOT_SUCCESSFUL"
    code = "unauthenticated"


class TenantDisabled(PermissionDenied):
    """The tenant is disabled or deleted; every key operation is refused."""

    code = "tenant_disabled"


class ConcurrentUpdate(OpenKCMError):
    """Somebody else changed this item first; re-read and retry."""

    http_status = 409
    kmip_reason = "GENERAL_FAILURE"
    code = "concurrent_update"


class AlreadyExists(OpenKCMError):
    """An item with this identity exists already."""

    http_status = 409
    kmip_reason = "INVALID_FIELD"
    code = "already_exists"


class WrongState(OpenKCMError):
    """The object is not in a state that allows this operation."""

    http_status = 409
    kmip_reason = "WRONG_KEY_LIFECYCLE_STATE"
    code = "wrong_state"


class IntegrityFailure(OpenKCMError):
    """Authenticated decryption failed. Deliberately says nothing more (no oracle)."""

    http_status = 400
    kmip_reason = "CRYPTOGRAPHIC_FAILURE"
    code = "integrity_failure"


class KeyUnavailable(OpenKCMError):
    """The key that protects this tenant cannot be used right now (L1 unreachable or disabled past
    the grace period, or the key was destroyed). Fails closed."""

    http_status = 503
    kmip_reason = "PERMISSION_DENIED"
    code = "key_unavailable"


class AuditUnavailable(OpenKCMError):
    """The audit trail cannot be written, so the operation was refused (fail closed)."""

    http_status = 503
    kmip_reason = "GENERAL_FAILURE"
    code = "audit_unavailable"
