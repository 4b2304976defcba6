"""OpenKCM: a per-tenant key hierarchy (L1 customer master key -> L2 tenant key -> L3 object keys ->
L4 derived keys) served to databases over KMIP and managed through a CMK API.

Folders are layers, imports point down only (checked by import-linter in the test suite):
``cli``/``local`` (adapters) -> ``api``/``kmip`` -> ``ops`` -> ``domain`` -> ``storage``.
``protocol`` (the KMIP codec) is a leaf; ``config``, ``errors`` and ``observability`` are neutral.
"""

__version__ = "0.1.0"

from openkcm.observability import cap_sdk_loggers as _cap_sdk_loggers

_cap_sdk_loggers()
