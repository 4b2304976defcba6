"""The benchmarks stay runnable: ``python -m bench --quick`` (tiny settings, a few seconds per part) in a
real subprocess — moto, our KMIP server, PyKMIP's server and the echo server each in their own process.

No timing assertions: the machine is shared. What must hold is correctness: every operation answered
Success on both servers (errors == 0, requests counted), the configuration is printed beside the figures,
the libmongocrypt run produced a figure for each provider, and a webhook reached a Ready tenant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(280)
def test_quick_benchmark_runs_end_to_end(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.pop("AWS_ENDPOINT_URL", None)  # the benchmark starts its own moto
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=260,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "configuration: " in out and "=== KMIP load benchmark ===" in out
    assert "OpenKCM vs PyKMIP" in out and "Audit overhead" in out and "Generator ceiling" in out

    load = json.loads((tmp_path / "kmip_load.json").read_text())
    assert load["config"]["machine"]["cpus"] >= 1
    runs = {(r["server"], r["operation"]): r for r in load["results"]}
    processes = load["config"]["options"]["processes"]
    ours = f"openkcm[x{processes}]" if processes > 1 else "openkcm"  # one server process per core
    for server in (ours, f"{ours} (null audit)", "pykmip"):
        for op in ("get", "encrypt", "decrypt", "locate", "create"):
            run = runs[(server, op)]
            assert run["count"] > 0, (server, op)
            assert run["errors"] == 0, (server, op, run)
    for op in ("get", "encrypt"):  # the stricter audit setting, fsync before each answer
        assert runs[(f"{ours} (audit fsync)", op)]["count"] > 0
    assert "Goal (issue 9)" in out and "Goal (issue 11)" in out
    for sink in ("audit", "null"):  # one A/B round in the quick run; the goal is also judged on its median
        assert runs[(f"{ours} (A/B 1 {sink})", "get")]["count"] > 0
    assert "A/B median" in out
    assert runs[("echo (generator ceiling)", "echo")]["count"] > 0
    resumed = [row for row in load["connections"] if row["server"] == ours and row["resume"]]
    assert resumed and resumed[0]["errors"] == 0 and resumed[0]["connections"] > 0

    crypt = json.loads((tmp_path / "mongocrypt.json").read_text())
    for key in (
        "cached/local",
        "cached/kmip (default: Get)",
        "cached/kmip (delegated: Decrypt)",
        "uncached/kmip (default: Get)",
    ):
        assert crypt["figures"][key]["median"] > 0, key
    assert crypt["figures"]["uncached/kmip (default: Get)"]["kms_requests_per_round"] >= 1

    prov = json.loads((tmp_path / "provision.json").read_text())
    assert prov["webhook_to_ready_ms"]["max"] > 0
    assert set(prov["api"]) == {
        "GET /v1/health",
        "GET /v1/accounts/{a}/tenants",
        "GET /v1/tenants/{t}/keys",
        "GET /v1/tenants/{t}/audit",
        "GET .../audit?since=<middle>",
        "GET .../audit?order=newest",
        "GET .../audit?order=newest&until=<middle>",
    }
    assert prov["audit_trail"]["events"] >= 2000 and prov["audit_trail"]["read_all_ms"] > 0
    assert prov["audit_trail"]["verify_ms"] > 0 and prov["audit_trail"]["compliance_report_ms"] > 0
