"""scripts/bootstrap.sh: a failing pip fails the script and writes no install stamp (found by a review;
fails before the fix: ``pip ... | grep ... || true`` swallowed pip's status). Runs a copy of the script in a
scratch tree with a fake venv, so nothing of the checkout is installed or built."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _tree(tmp_path: Path, pip_body: str) -> tuple[Path, Path]:
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "bootstrap.sh", root / "scripts" / "bootstrap.sh")
    (root / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    venv = tmp_path / "fakevenv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text(f"#!/bin/sh\nexec {sys.executable} \"$@\"\n")
    (venv / "pip").write_text(f"#!/bin/sh\n{pip_body}\n")
    for tool in ("python", "pip"):
        (venv / tool).chmod(0o755)
    return root, venv.parent


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("sha256sum") is None, reason="needs bash")
@pytest.mark.parametrize(("pip_body", "ok"), [
    ("echo 'ERROR: No matching distribution found for boto3'; exit 1", False),
    ("echo 'WARNING: Location ignored'; echo; exit 0", True),  # everything filtered out is not a failure
])
def test_pip_failure_fails_the_script(tmp_path, pip_body, ok):
    root, venv = _tree(tmp_path, pip_body)
    out = subprocess.run(["bash", str(root / "scripts" / "bootstrap.sh"), "run"], check=False, cwd=tmp_path,
                         env={**os.environ, "VENV": str(venv)}, capture_output=True, text=True, timeout=60)
    assert (out.returncode == 0) is ok, out.stderr
    assert (venv / ".openkcm-local.stamp").exists() is ok
    if not ok:
        assert "No matching distribution" in out.stderr and "failed" in out.stderr  # pip's output still shown
    assert "WARNING: Location" not in out.stderr
