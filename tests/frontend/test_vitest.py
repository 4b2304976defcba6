"""Runs the web UI's vitest unit and component tests from pytest, so `make test` covers them."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"


@pytest.mark.slow
def test_vitest_suite_passes() -> None:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed")
    if not (FRONTEND / "node_modules").is_dir():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=FRONTEND, check=True, timeout=600)
    env = {**os.environ, "CI": "true", "NO_COLOR": "1"}
    done = subprocess.run(
        [npm, "test", "--", "--run", "--reporter=dot"],
        cwd=FRONTEND, env=env, capture_output=True, text=True, timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    assert " passed" in output and "failed" not in output.split("Test Files")[-1], output[-3000:]
