"""The dispatch table: KMIP operation -> handler (one module per operation). ``SINCE`` is the first
protocol version defining an operation (Query lists only those of the client's version)."""

from __future__ import annotations

from collections.abc import Callable

from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.operations import (
    activate,
    add_attribute,
    check,
    create,
    decrypt,
    delete_attribute,
    derive_key,
    destroy,
    discover_versions,
    encrypt,
    get,
    get_attribute_list,
    get_attributes,
    locate,
    mac,
    mac_verify,
    modify_attribute,
    query,
    register,
    rekey,
    revoke,
    set_attribute,
)
from openkcm.protocol.tags import Op
from openkcm.protocol.ttlv import TTLV

Handler = Callable[[RequestContext, TTLV, BatchState], Outcome]

HANDLERS: dict[int, Handler] = {
    Op.DISCOVER_VERSIONS: discover_versions.handle,
    Op.QUERY: query.handle,
    Op.CREATE: create.handle,
    Op.REGISTER: register.handle,
    Op.ACTIVATE: activate.handle,
    Op.GET: get.handle,
    Op.GET_ATTRIBUTES: get_attributes.handle,
    Op.GET_ATTRIBUTE_LIST: get_attribute_list.handle,
    Op.REVOKE: revoke.handle,
    Op.DESTROY: destroy.handle,
    Op.ENCRYPT: encrypt.handle,
    Op.DECRYPT: decrypt.handle,
    Op.ADD_ATTRIBUTE: add_attribute.handle,
    Op.MODIFY_ATTRIBUTE: modify_attribute.handle,
    Op.DELETE_ATTRIBUTE: delete_attribute.handle,
    Op.SET_ATTRIBUTE: set_attribute.handle,
    Op.LOCATE: locate.handle,
    Op.CHECK: check.handle,
    Op.REKEY: rekey.handle,
    Op.MAC: mac.handle,
    Op.MAC_VERIFY: mac_verify.handle,
    Op.DERIVE_KEY: derive_key.handle,
}

SINCE: dict[int, tuple[int, int]] = {
    Op.DISCOVER_VERSIONS: (1, 1),
    Op.ENCRYPT: (1, 2),
    Op.DECRYPT: (1, 2),
    Op.MAC: (1, 2),
    Op.MAC_VERIFY: (1, 2),
    Op.SET_ATTRIBUTE: (2, 0),
}
