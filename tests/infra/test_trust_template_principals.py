"""The AWS trust template names every OpenKCM role that assumes a customer's role when the stack says
which they are (``OPENKCM_KEYSTORE_ACCESS_ROLE_ARNS``), and only the caller's role otherwise.

Runs against the session's moto server (tests/conftest.py); no synthesis."""

from __future__ import annotations

ROLES = [
    "arn:aws:iam::123456789012:role/OpenKcm-Rotate",
    "arn:aws:iam::123456789012:role/OpenKcm-CmkApi",
    "arn:aws:iam::123456789012:role/OpenKcm-KmipTask",
]
KEY = "arn:aws:kms:eu-central-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_configured_roles_are_all_trusted(settings) -> None:
    from openkcm.ops.keystores import aws_trust_template
    from openkcm.ops.runtime import build_runtime

    rt = build_runtime(
        settings.model_copy(update={"keystore_access_role_arns": " , ".join(ROLES) + ","}), create=True
    )
    try:
        template = aws_trust_template(rt, "acme-corp-12345", key_arn=KEY)
    finally:
        rt.close()
    statement = template["role_trust_policy"]["Statement"][0]
    assert statement["Principal"]["AWS"] == sorted(ROLES) == template["openkcm_principals"]
    assert statement["Action"] == "sts:AssumeRole"
    assert set(statement["Condition"]["StringEquals"]) == {"sts:ExternalId"}
    # The key policy still names the customer's own role, never ours.
    assert (
        template["key_policy_statement"]["Principal"]["AWS"]
        == "arn:aws:iam::111122223333:role/OpenKCMKeyAccess"
    )


def test_without_configuration_the_caller_role_is_trusted(runtime) -> None:
    from openkcm.ops.keystores import aws_trust_template

    assert runtime.settings.keystore_access_role_list == []
    template = aws_trust_template(runtime, "acme-corp-12345")
    principal = template["role_trust_policy"]["Statement"][0]["Principal"]["AWS"]
    assert isinstance(principal, str) and principal == template["openkcm_principal"]
    assert template["openkcm_principals"] == [principal]
