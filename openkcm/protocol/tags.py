"""KMIP tag and enumeration values as plain ints (from PyKMIP's enumerations, ``kmip.core.enums``).

Plain ints keep comparisons on the hot path cheap; names stay those of PyKMIP so the spec is easy to
find. Only the enumerations module of PyKMIP is used, never its object model or server.
"""

from __future__ import annotations

from types import SimpleNamespace

from kmip.core import enums


def _ints(enum_class: type) -> SimpleNamespace:
    return SimpleNamespace(**{member.name: member.value for member in enum_class})  # type: ignore[attr-defined]


Tag = _ints(enums.Tags)
Op = _ints(enums.Operation)
Reason = _ints(enums.ResultReason)
Status = _ints(enums.ResultStatus)
ObjectType = _ints(enums.ObjectType)
State = _ints(enums.State)
Alg = _ints(enums.CryptographicAlgorithm)
Mode = _ints(enums.BlockCipherMode)
Padding = _ints(enums.PaddingMethod)
KeyFormat = _ints(enums.KeyFormatType)
Usage = _ints(enums.CryptographicUsageMask)
Hashing = _ints(enums.HashingAlgorithm)
Derivation = _ints(enums.DerivationMethod)
RevocationCode = _ints(enums.RevocationReasonCode)
NameType = _ints(enums.NameType)
LinkType = _ints(enums.LinkType)
QueryFunction = _ints(enums.QueryFunction)
Validity = _ints(enums.ValidityIndicator)
WrappingMethod = _ints(enums.WrappingMethod)
BatchContinuation = _ints(enums.BatchErrorContinuationOption)

OPERATION_NAMES = {member.value: member.name for member in enums.Operation}
REASON_NAMES = {member.value: member.name for member in enums.ResultReason}
OBJECT_TYPE_NAMES = {member.value: member.name for member in enums.ObjectType}
STATE_NAMES = {member.value: member.name for member in enums.State}
STATE_VALUES = {member.name: member.value for member in enums.State}
TAG_NAMES = {member.value: member.name for member in enums.Tags}

# Result reasons KMIP 1.0-1.4 define (1.x ends at Object Already Exists, plus General Failure).
REASONS_1X = frozenset(range(0x01, 0x19)) | {0x100}
