"""Architecture rules that tests keep true."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_imports_point_down_only():
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]


def test_server_code_never_uses_pykmip_engine():
    """DECISIONS 18: PyKMIP is a test client and the benchmark's baseline, never our server."""
    offenders = []
    for folder in ("openkcm", "kmip_fargate", "functions"):
        for path in (REPO / folder).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "kmip.services" in text or "from kmip import services" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == []
