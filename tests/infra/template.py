"""Reading a synthesised CloudFormation template: what the infra tests share."""

from __future__ import annotations

from typing import Any


def ref_of(value: Any) -> str | None:
    """The logical id a {"Ref": ...} or {"Fn::GetAtt": [...]} points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            return value["Fn::GetAtt"][0]
    return None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}
