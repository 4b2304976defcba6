"""The environment variables the stack gives the service processes.

Names that :class:`openkcm.config.Settings` reads are derived from its fields (``OPENKCM_`` + field
name upper-cased) and checked to exist, so a renamed setting breaks synthesis instead of production.
The few that no setting reads yet are listed in :data:`INFRA_ONLY` (and in infra_cdk/README.md)."""

from __future__ import annotations

from openkcm.config import Settings

PREFIX = "OPENKCM_"

INFRA_ONLY = frozenset(
    {
        # read by kmip_fargate.main (not Settings):
        "OPENKCM_KMIP_PORT",  # 5696
        "OPENKCM_KMIP_HEALTH_PORT",  # 5697: plain-HTTP health endpoint for the NLB
        "OPENKCM_KMIP_CERT",  # PEM file paths, written by the task's entry point from Secrets Manager
        "OPENKCM_KMIP_KEY",
        "OPENKCM_KMIP_CA",
        "OPENKCM_KMIP_PROCESSES",  # one server process per vCPU of the task, sharing the port (SO_REUSEPORT)
    }
)


def setting(field: str) -> str:
    """``OPENKCM_<FIELD>`` for a field that Settings really has."""
    if field not in Settings.model_fields:
        raise KeyError(f"openkcm.config.Settings has no field {field!r}")
    return PREFIX + field.upper()


def infra(name: str) -> str:
    if name not in INFRA_ONLY:
        raise KeyError(f"{name} is not a documented infrastructure variable")
    return name
