"""The KMIP task runs with a read-only root filesystem: everything it writes (audit WAL, TLS files from the
entry point, temporary files) lies on a task volume mounted at a VOLUME path of kmip_fargate/Dockerfile,
so ECS copies the image's directory (owner uid 10001) into it. Uses the session's synthesis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.infra


def _dockerfile_volumes() -> tuple[list[str], str]:
    text = (REPO / "kmip_fargate" / "Dockerfile").read_text()
    final_stage = text.split("\nFROM ")[-1]
    volumes: list[str] = []
    for match in re.finditer(r"^VOLUME\s+(.+)$", final_stage, re.MULTILINE):
        value = match.group(1).strip()
        volumes += json.loads(value) if value.startswith("[") else value.split()
    return volumes, final_stage


def test_task_root_filesystem_is_read_only_with_volumes_at_the_dockerfile_paths(synth) -> None:
    from infra_cdk.components.kmip import DATA_DIR

    task = next(iter(synth.resources("AWS::ECS::TaskDefinition").values()))["Properties"]
    container = task["ContainerDefinitions"][0]
    assert container["ReadonlyRootFilesystem"] is True
    # Task volumes are bind mounts on the task's ephemeral storage (no host path, no EFS).
    volumes = {v["Name"]: v for v in task["Volumes"]}
    assert all(set(v) == {"Name"} for v in volumes.values()), volumes
    mounts = {m["ContainerPath"]: m for m in container["MountPoints"]}
    assert set(mounts) == {DATA_DIR, "/tmp"}
    assert all(m["ReadOnly"] is False and m["SourceVolume"] in volumes for m in mounts.values())

    # Each mounted path is a VOLUME of the image, declared after the non-root user owns the data dir.
    declared, stage = _dockerfile_volumes()
    assert set(mounts) <= set(declared)
    assert stage.index("useradd") < stage.index("VOLUME") and f"--home-dir {DATA_DIR}" in stage
    assert f"OPENKCM_DATA_DIR={DATA_DIR}" in stage

    # Everything the task writes is under a writable mount: the data dir, and the TLS files the entry point
    # writes from Secrets Manager.
    env = {e["Name"]: e["Value"] for e in container["Environment"]}
    assert env["OPENKCM_DATA_DIR"] == DATA_DIR
    for name in ("OPENKCM_KMIP_CERT", "OPENKCM_KMIP_KEY", "OPENKCM_KMIP_CA"):
        assert env[name].startswith(DATA_DIR + "/"), name
