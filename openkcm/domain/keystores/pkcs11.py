"""An HSM over PKCS#11 as an L1 keystore (HYOK: hold your own key, on premises).

Configuration: ``module_path`` (must be on the operator's allow-list ``OPENKCM_PKCS11_MODULES`` —
a module is native code loaded into our process, DECISIONS 11), ``token_label`` or ``slot_id``, and an
optional ``mechanism`` (``aes-gcm`` default where the token has it, else ``aes-key-wrap-pad``).
Secret: ``pin`` (the CKU_USER PIN). The key is an AES key on the token found by label (``label:<x>`` or
a bare label) or by id (``id:<hex>``); it must be sensitive and never extractable — we refuse one that
is not.

Blob layout: ``b"P" || mechanism byte || body``.
- ``0x01`` AES-GCM: ``nonce(12) || ciphertext || tag``, AAD = canonical encoding of the context.
- ``0x02`` AES-KWP (RFC 5649, CKM_AES_KEY_WRAP_PAD through C_WrapKey on a session object): the wrapped
  value is ``context digest(16) || L2``, compared on unwrap, since KWP has no associated data.

A network HSM (Thales Luna, Entrust nShield, Utimaco, AWS CloudHSM …) is just a module whose own
configuration file names the appliance; see the README in this folder for the network path.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from openkcm.domain.envelope import binding
from openkcm.domain.keystores.base import (
    KeyInfo,
    KeystoreAuthenticationFailed,
    KeystoreConfigInvalid,
    KeystoreConnector,
    KeystoreKeyDisabled,
    KeystoreKeyNotFound,
    KeystoreKeyUnsuitable,
    KeystoreTimeout,
    KeystoreUnreachable,
    bind_plaintext,
    unbind_plaintext,
)
from openkcm.domain.wrapping import Context
from openkcm.errors import IntegrityFailure, OpenKCMError

PROVIDER = "pkcs11"
GCM, KWP = 0x01, 0x02
_MAGIC = b"P"
_MECHANISMS = {"aes-gcm": GCM, "aes-key-wrap-pad": KWP}
_NONCE = 12

# PKCS#11 login state is per application and token: two sessions of one process logging in to the same
# token collide (CKR_USER_ALREADY_LOGGED_IN), and a second session would silently share the first one's
# login. Calls on one token are therefore serialised; each opens, logs in with its own PIN, works and
# closes (the last close logs out).
_TOKEN_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_TOKEN_LOCKS_GUARD = threading.Lock()


def _token_lock(module: str, token: str) -> threading.Lock:
    with _TOKEN_LOCKS_GUARD:
        return _TOKEN_LOCKS.setdefault((module, token), threading.Lock())


def _integrity_errors() -> tuple[type[BaseException], ...]:
    import pkcs11

    return (
        pkcs11.GeneralError,
        pkcs11.EncryptedDataInvalid,
        pkcs11.EncryptedDataLenRange,
        pkcs11.WrappedKeyInvalid,
        pkcs11.WrappedKeyLenRange,
    )


def parse_key_ref(key_ref: str) -> tuple[str, str | bytes]:
    """``label:<x>`` / bare label -> ("label", x); ``id:<hex>`` -> ("id", bytes)."""
    if key_ref.startswith("id:"):
        try:
            value = bytes.fromhex(key_ref[3:])
        except ValueError:
            raise KeystoreConfigInvalid("a PKCS#11 key id is hex: id:<hex>", field="key_ref") from None
        if not value:
            raise KeystoreConfigInvalid("empty PKCS#11 key id", field="key_ref")
        return "id", value
    label = key_ref.removeprefix("label:")
    if not label or len(label) > 256:
        raise KeystoreConfigInvalid("a PKCS#11 key is named by label (label:<x>) or id (id:<hex>)", field="key_ref")
    return "label", label


class Pkcs11Connector(KeystoreConnector):
    provider = PROVIDER
    required_config = frozenset({"module_path"})
    optional_config = frozenset({"token_label", "slot_id", "mechanism"})
    secret_fields = frozenset({"pin"})

    def __init__(
        self,
        config: dict[str, Any],
        secrets: Any = None,
        *,
        allowed_modules: list[str] | tuple[str, ...] = (),
        keystore_id: str = "",
        key_ref: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        super().__init__(keystore_id=keystore_id, key_ref=key_ref, timeout=timeout)
        self.validate_config(config, allowed_modules)
        self._module = str(config["module_path"])
        self._token_label = config.get("token_label") or None
        self._slot_id = int(config["slot_id"]) if config.get("slot_id") not in (None, "") else None
        self._mechanism_name = config.get("mechanism") or ""
        self._pin = (secrets or {}).get("pin") or None

    @classmethod
    def validate_config(cls, config: dict[str, Any], allowed_modules: list[str] | tuple[str, ...]) -> None:
        module = str(config.get("module_path", ""))
        # Exact match against the operator's list: never a path an API caller chose (DECISIONS 11).
        if not module or module not in set(allowed_modules):
            raise KeystoreConfigInvalid(
                f"PKCS#11 module {module or '(none)'} is not on this deployment's allow-list",
                fix="Ask the operator to add the module path to OPENKCM_PKCS11_MODULES, or pick one listed there.",
                field="module_path",
            )
        if not config.get("token_label") and config.get("slot_id") in (None, ""):
            raise KeystoreConfigInvalid("name the token by token_label or slot_id", field="token_label")
        if config.get("slot_id") not in (None, ""):
            try:
                int(config["slot_id"])
            except (TypeError, ValueError):
                raise KeystoreConfigInvalid("slot_id is an integer", field="slot_id") from None
        mechanism = config.get("mechanism")
        if mechanism and mechanism not in _MECHANISMS:
            raise KeystoreConfigInvalid(f"mechanism must be one of {sorted(_MECHANISMS)}", field="mechanism")

    # ---- sessions ------------------------------------------------------------------------------
    def _token(self) -> Any:
        import pkcs11

        try:
            lib = pkcs11.lib(self._module)
        except Exception as exc:
            raise KeystoreUnreachable(
                f"PKCS#11 module {self._module} could not be loaded ({type(exc).__name__})",
                fix="Install the HSM client software on the OpenKCM hosts and check its configuration file.",
            ) from exc
        try:
            if self._token_label:
                return lib.get_token(token_label=self._token_label)
            for slot in lib.get_slots(token_present=True):
                if slot.slot_id == self._slot_id:
                    return slot.get_token()
            raise pkcs11.NoSuchToken()
        except pkcs11.NoSuchToken:
            raise KeystoreUnreachable(
                f"no token {self._token_label or f'in slot {self._slot_id}'} is present in {self._module}",
                fix="Check the token label or slot and that the HSM partition is reachable and assigned.",
            ) from None

    @property
    def backend_key(self) -> str:
        return f"{PROVIDER}:{self._module}"  # every keystore on one module waits behind its lock

    @contextmanager
    def _session(self) -> Iterator[Any]:
        import pkcs11

        # One lock per module: two keystores naming the same token (by label and by slot) never overlap, so
        # every session proves its own PIN — none rides on another's login — and token lookups never race
        # with operations (SoftHSM answers C_GetTokenInfo during another session's work with a general error).
        # Waited for at most one call's timeout: behind a hung call the worker gives up instead of queueing.
        lock = _token_lock(self._module, "*")
        if not lock.acquire(timeout=self.timeout):
            raise KeystoreTimeout(
                f"the HSM module was not free within {self.timeout:.0f} s (an earlier call has not returned)"
            )
        try:
            token = self._token()
            try:
                session = token.open(user_pin=self._pin)
            except pkcs11.UserAlreadyLoggedIn:
                raise KeystoreUnreachable(
                    "the HSM token is logged in by another application in this process",
                    fix="Give OpenKCM's keystore connections sole use of the token in this process.",
                ) from None
            try:
                yield session
            finally:
                session.close()
        finally:
            lock.release()

    def _find_key(self, session: Any, key_ref: str) -> Any:
        import pkcs11
        from pkcs11 import ObjectClass

        kind, value = parse_key_ref(key_ref)
        try:
            if kind == "id":
                return session.get_key(object_class=ObjectClass.SECRET_KEY, id=value)
            return session.get_key(object_class=ObjectClass.SECRET_KEY, label=value)
        except pkcs11.NoSuchKey:
            raise KeystoreKeyNotFound(
                f"no secret key {key_ref} on token {self._token_label or self._slot_id}",
                fix="Check the key label/id; a destroyed key cannot come back — restore it from the HSM backup.",
            ) from None
        except pkcs11.MultipleObjectsReturned:
            raise KeystoreKeyUnsuitable(f"several keys match {key_ref}; name it by id (id:<hex>)") from None

    def _key_info(self, key: Any, key_ref: str) -> KeyInfo:
        from pkcs11 import Attribute, KeyType

        extractable = bool(key[Attribute.EXTRACTABLE])
        sensitive = bool(key[Attribute.SENSITIVE])
        is_aes = key.key_type == KeyType.AES
        can_use = bool(key[Attribute.ENCRYPT]) and bool(key[Attribute.DECRYPT])
        can_wrap = bool(key[Attribute.WRAP]) and bool(key[Attribute.UNWRAP])
        problems = []
        if not is_aes:
            problems.append("not an AES key")
        if extractable or not sensitive:
            problems.append("extractable or not sensitive")
        if not (can_use or can_wrap):
            problems.append("neither encrypt/decrypt nor wrap/unwrap allowed")
        length = int(key[Attribute.VALUE_LEN]) if is_aes else 0
        return KeyInfo(
            key_ref=key_ref,
            key_id=bytes(key[Attribute.ID] or b"").hex(),
            state="; ".join(problems) or "usable",
            usable=not problems,
            algorithm=f"AES-{length * 8}" if is_aes else str(key.key_type),
            origin="HSM",
            description=str(key[Attribute.LABEL] or ""),
            extra={"extractable": str(extractable).lower(), "can_encrypt": str(can_use).lower(), "can_wrap": str(can_wrap).lower()},
        )

    def _raise_unusable(self, info: KeyInfo) -> None:
        raise KeystoreKeyUnsuitable(
            f"HSM key {info.key_ref} cannot be an L1 key: {info.state}",
            fix="Generate an AES-256 key with CKA_SENSITIVE=true, CKA_EXTRACTABLE=false and encrypt/decrypt "
            "(or wrap/unwrap) allowed.",
        )

    def _usable_key(self, session: Any, key_ref: str) -> tuple[Any, KeyInfo]:
        key = self._find_key(session, key_ref)
        info = self._key_info(key, key_ref)
        if not info.usable:
            self._raise_unusable(info)
        return key, info

    def _choose_mechanism(self, token: Any, info: KeyInfo) -> int:
        from pkcs11 import Mechanism

        if self._mechanism_name:
            return _MECHANISMS[self._mechanism_name]
        mechanisms = token.slot.get_mechanisms()
        if Mechanism.AES_GCM in mechanisms and info.extra.get("can_encrypt") == "true":
            return GCM
        if Mechanism.AES_KEY_WRAP_PAD in mechanisms and info.extra.get("can_wrap") == "true":
            return KWP
        raise KeystoreKeyUnsuitable("the token offers neither CKM_AES_GCM nor CKM_AES_KEY_WRAP_PAD for this key")

    # ---- backend calls -------------------------------------------------------------------------
    def _test_connection(self) -> None:
        with self._session():
            pass

    def _describe_key(self, key_ref: str) -> KeyInfo:
        with self._session() as session:
            return self._key_info(self._find_key(session, key_ref), key_ref)

    def _list_keys(self) -> list[KeyInfo]:
        from pkcs11 import Attribute, ObjectClass

        with self._session() as session:
            keys = []
            for key in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.TOKEN: True}):
                label = str(key[Attribute.LABEL] or "")
                ref = f"label:{label}" if label else f"id:{bytes(key[Attribute.ID] or b'').hex()}"
                keys.append(self._key_info(key, ref))
            return keys

    def _wrap(self, key_ref: str, plaintext: bytes, context: Context) -> bytes:
        from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass

        with self._session() as session:
            key, info = self._usable_key(session, key_ref)
            mech = self._choose_mechanism(session.token, info)
            if mech == GCM:
                nonce = os.urandom(_NONCE)
                params = GCMParams(nonce, binding("openkcm/l1-pkcs11", context), 128)
                body = nonce + key.encrypt(bytes(plaintext), mechanism=Mechanism.AES_GCM, mechanism_param=params)
            else:
                # KWP wraps key objects: the bound L2 becomes a session (non-token) object for one call.
                temp = session.create_object(
                    {
                        Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.KEY_TYPE: KeyType.GENERIC_SECRET,
                        Attribute.VALUE: bind_plaintext(bytes(plaintext), context),
                        Attribute.TOKEN: False,
                        Attribute.EXTRACTABLE: True,
                        Attribute.SENSITIVE: False,
                    }
                )
                try:
                    body = key.wrap_key(temp, mechanism=Mechanism.AES_KEY_WRAP_PAD)
                finally:
                    temp.destroy()
            return _MAGIC + bytes([mech]) + body

    def _unwrap(self, key_ref: str, blob: bytes, context: Context) -> bytes:
        from pkcs11 import Attribute, GCMParams, KeyType, Mechanism, ObjectClass

        if len(blob) < 2 + 16 or blob[:1] != _MAGIC or blob[1] not in (GCM, KWP):
            raise IntegrityFailure()
        mech, body = blob[1], bytes(blob[2:])
        with self._session() as session:
            key, _ = self._usable_key(session, key_ref)
            try:
                if mech == GCM:
                    params = GCMParams(body[:_NONCE], binding("openkcm/l1-pkcs11", context), 128)
                    return bytes(key.decrypt(body[_NONCE:], mechanism=Mechanism.AES_GCM, mechanism_param=params))
                temp = key.unwrap_key(
                    ObjectClass.SECRET_KEY,
                    KeyType.GENERIC_SECRET,
                    body,
                    mechanism=Mechanism.AES_KEY_WRAP_PAD,
                    store=False,
                    template={Attribute.EXTRACTABLE: True, Attribute.SENSITIVE: False},
                )
            except _integrity_errors() as exc:
                # Wrong tag, wrong AAD, tampered blob: opaque on purpose (SoftHSM reports a failed tag check
                # as a general error). Only the decrypt call itself is read this way.
                raise IntegrityFailure() from exc
            try:
                value = bytes(temp[Attribute.VALUE])
            finally:
                temp.destroy()
            return unbind_plaintext(value, context)

    # ---- error mapping -------------------------------------------------------------------------
    def _map_error(self, exc: BaseException, operation: str, key_ref: str) -> OpenKCMError | None:
        import pkcs11

        if isinstance(exc, pkcs11.PinIncorrect | pkcs11.PinInvalid | pkcs11.PinLenRange):
            return KeystoreAuthenticationFailed(
                f"the HSM refused the PIN for token {self._token_label or self._slot_id}",
                fix="Update the keystore's PIN (the CKU_USER PIN of the token).",
            )
        if isinstance(exc, pkcs11.PinLocked | pkcs11.PinExpired):
            return KeystoreAuthenticationFailed(
                f"the PIN of token {self._token_label or self._slot_id} is locked or expired",
                fix="Unlock or reset the user PIN with the HSM's security officer, then update the keystore.",
            )
        if isinstance(exc, pkcs11.KeyHandleInvalid | pkcs11.ObjectHandleInvalid):
            return KeystoreKeyDisabled(f"HSM key {key_ref} disappeared during {operation}")
        if isinstance(exc, pkcs11.DeviceRemoved | pkcs11.TokenNotPresent | pkcs11.DeviceError | pkcs11.SessionClosed):
            return KeystoreUnreachable(f"the HSM token went away during {operation} ({type(exc).__name__})")
        if isinstance(exc, pkcs11.MechanismInvalid | pkcs11.FunctionNotSupported | pkcs11.KeyTypeInconsistent):
            return KeystoreKeyUnsuitable(f"HSM key {key_ref} does not allow {operation} ({type(exc).__name__})")
        return None


__all__ = ["KeystoreKeyDisabled", "Pkcs11Connector", "parse_key_ref"]
