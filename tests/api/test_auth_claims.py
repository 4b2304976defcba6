"""Claims as API Gateway's JWT authorizer hands them over, and the one role table."""

from __future__ import annotations

import pytest

from openkcm.api import auth
from openkcm.errors import NotFound, PermissionDenied, Unauthenticated


@pytest.mark.parametrize("roles", [
    ["key-admin", "auditor"], "[key-admin auditor]", '["key-admin","auditor"]', "key-admin auditor", "key-admin,auditor",
])
def test_role_claim_shapes(roles):
    who = auth.Principal.from_claims({"sub": "u", "openkcm:account": "acme", "openkcm:roles": roles})
    assert who.roles == {"key-admin", "auditor"} and not who.mfa


@pytest.mark.parametrize(("amr", "mfa"), [(["pwd", "mfa"], True), ("[pwd mfa]", True), (["pwd"], False),
                                          (None, False), ("[]", False), ("mfa-ish", False)])
def test_mfa_only_from_an_exact_amr_entry(amr, mfa):
    claims = {"sub": "u", "openkcm:account": "acme", "openkcm:roles": ["key-admin"], "amr": amr}
    assert auth.Principal.from_claims(claims).mfa is mfa


def test_unknown_roles_are_ignored_and_none_left_is_refused():
    who = auth.Principal.from_claims({"sub": "u", "openkcm:account": "a", "openkcm:roles": ["auditor", "root"]})
    assert who.roles == {"auditor"}
    with pytest.raises(PermissionDenied):
        auth.Principal.from_claims({"sub": "u", "openkcm:account": "a", "openkcm:roles": ["root"]})
    with pytest.raises(Unauthenticated):
        auth.Principal.from_claims({})
    with pytest.raises(Unauthenticated):
        auth.Principal.from_claims({"sub": "\x00", "openkcm:roles": ["auditor"], "openkcm:account": "a"})


def test_scope_before_permission():
    auditor = auth.Principal("u", "acme", frozenset({"auditor"}), False)
    with pytest.raises(NotFound):
        auditor.require(auth.TENANT_DELETE, "other")  # 404 outside scope, whatever the permission
    with pytest.raises(PermissionDenied):
        auditor.require(auth.TENANT_DELETE, "acme")
    auditor.require(auth.AUDIT_READ, "acme")
    operator = auth.Principal("op", "", frozenset({"platform-operator"}), False)
    operator.require(auth.TENANT_READ, "any-account")
    for permission in (auth.KEYSTORE_WRITE, auth.L1_WRITE, auth.ROTATION_WRITE, auth.CERT_WRITE, auth.TENANT_DELETE):
        with pytest.raises(PermissionDenied):
            operator.require(permission, "any-account")


def test_every_role_has_a_row_and_only_known_permissions():
    assert set(auth.ROLE_PERMISSIONS) == set(auth.ROLES)
    for permissions in auth.ROLE_PERMISSIONS.values():
        assert permissions <= auth.ALL_PERMISSIONS
    assert auth.ROLE_PERMISSIONS[auth.ACCOUNT_ADMIN] == auth.ALL_PERMISSIONS


@pytest.mark.parametrize(
    ("value", "mfa"), [("true", True), ("True", True), ("false", False), ("", False), (True, True), (None, False)]
)
def test_cognito_mfa_claim_from_the_stack_trigger(value, mfa):
    claims = {"sub": "u", "openkcm:account": "acme", "openkcm:roles": ["key-admin"], "openkcm:mfa": value}
    assert auth.Principal.from_claims(claims).mfa is mfa
