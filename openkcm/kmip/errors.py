"""The KMIP layer's own failure (a Result Reason and a message) and the one mapping of domain errors."""

from __future__ import annotations

from openkcm.errors import OpenKCMError
from openkcm.protocol.tags import Reason


class KmipError(Exception):
    """An operation failed with a KMIP Result Reason. ``message`` goes to the client: never a secret,
    never anything that tells one tenant about another."""

    def __init__(self, reason: int, message: str, payload: list | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.payload = payload  # a few operations (Check) name the failing fields in the payload


def from_domain(exc: OpenKCMError) -> KmipError:
    """Map a domain error to a KMIP result (each error class names its reason: errors.py)."""
    reason = getattr(Reason, exc.kmip_reason, Reason.GENERAL_FAILURE)
    if exc.kmip_reason == "ITEM_NOT_FOUND":
        return KmipError(reason, "no such object")
    if exc.code in ("integrity_failure", "key_unavailable", "audit_unavailable", "internal_error"):
        return KmipError(reason, exc.message.split(".")[0][:120])
    return KmipError(reason, exc.message[:200])


def not_found() -> KmipError:
    """One answer for a missing object and for another tenant's object (no oracle)."""
    return KmipError(Reason.ITEM_NOT_FOUND, "no such object")


def invalid(message: str, reason: int = Reason.INVALID_FIELD) -> KmipError:
    return KmipError(reason, message)


def wrong_state(message: str = "the object is not in a state that allows this operation") -> KmipError:
    return KmipError(Reason.WRONG_KEY_LIFECYCLE_STATE, message)
