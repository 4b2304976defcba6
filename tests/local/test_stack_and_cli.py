"""``openkcm local up`` and the CLI (found by a review; these fail before the fix):

- one stack per data directory (an exclusive flock on ``<data-dir>/.lock``): a second ``local up`` exits 2
  with one line; a clean stop removes ``stack.json``, and commands then say the stack is not running;
- a non-loopback ``--host`` needs ``--unsafe-expose``, and moto stays on 127.0.0.1 even then;
- bad input, a dead stack, a port in use: ``error: ...`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "openkcm.cli", *args], check=False, cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=timeout)


def _one_line_error(out: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in out.stderr, out.stderr[-600:]
    assert out.returncode == 2 and out.stderr.startswith("error:"), (out.returncode, out.stderr[-600:])
    assert out.stderr.count("\n") == 1, out.stderr
    return out.stderr


def _up(data_dir: Path, *extra: str) -> subprocess.Popen:
    ports = [f"--port={n}={free_port()}" for n in ("kmip", "api", "kmip-health")]
    return subprocess.Popen(
        [sys.executable, "-m", "openkcm.cli", "local", "up", "--data-dir", str(data_dir),
         "--moto-port", str(free_port()), "--health-port", str(free_port()), *ports, *extra],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_up(proc: subprocess.Popen, timeout: float = 90) -> bool:
    deadline = time.monotonic() + timeout
    for line in proc.stdout:
        if "Press Ctrl-C" in line:
            return True
        if time.monotonic() > deadline:
            break
    return False


@pytest.mark.slow
def test_second_stack_on_the_same_data_dir_is_refused_and_a_clean_stop_removes_stack_json(tmp_path):
    data_dir = tmp_path / "openkcm"
    first = _up(data_dir)
    try:
        assert _wait_up(first)
        second = _up(data_dir)
        try:
            _, err = second.communicate(timeout=60)
        finally:
            if second.poll() is None:
                os.killpg(second.pid, signal.SIGKILL)
                second.wait(timeout=30)
        assert second.returncode == 2, err[-600:]
        assert err.startswith("error: another `openkcm local up` is running on") and err.count("\n") == 1, err
        assert json.loads((data_dir / "stack.json").read_text())["pid"] == first.pid  # left alone
        assert _cli("local", "status", "--data-dir", str(data_dir)).returncode == 0
        first.send_signal(signal.SIGINT)
        first.wait(timeout=60)
        assert first.returncode == 0
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
    assert not (data_dir / "stack.json").exists()
    err = _one_line_error(_cli("tenant", "list", "--account", "a", "--data-dir", str(data_dir)))
    assert "not running" in err


@pytest.mark.parametrize("args", [
    ["tenant", "list", "--account", "a"],                          # stack.json of a killed stack: dead endpoint
    ["local", "up", "--port", "kmip"],                             # SERVICE=PORT without '='
    ["local", "up", "--port", "kmip=abc"],
    ["local", "up", "--port", "kmip=70000"],
    ["local", "up", "--moto-port", "x"],
    ["local", "up", "--host", "0.0.0.0"],                          # needs --unsafe-expose
    ["local", "up", "--host", "192.0.2.10"],
    ["audit", "archive", "--tenant", "t", "--before", "yesterday"],
])
def test_cli_errors_are_one_line_messages(tmp_path, args):
    (tmp_path / "stack.json").write_text(json.dumps({"aws_endpoint": "http://127.0.0.1:9", "services": {}}))
    _one_line_error(_cli(*args, "--data-dir", str(tmp_path)))


@pytest.mark.slow
def test_port_in_use_is_a_one_line_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        err = _one_line_error(_cli("local", "up", "--data-dir", str(tmp_path / "d"), "--moto-port", str(port)))
    assert f"127.0.0.1:{port}" in err and "in use" in err
    assert not (tmp_path / "d" / "stack.json").exists()


def test_lock_is_exclusive_and_released(tmp_path):
    from openkcm.local.stack import LocalStack, StackError, StackOptions, stack_running

    assert stack_running(tmp_path) is None
    first = LocalStack(StackOptions(data_dir=tmp_path))
    first._lock()
    try:
        assert stack_running(tmp_path) is True
        second = LocalStack(StackOptions(data_dir=tmp_path))
        with pytest.raises(StackError, match="another `openkcm local up` is running"):
            second.up()
        second.down()  # the refused stack touches nothing of the running one
        assert stack_running(tmp_path) is True
    finally:
        first._unlock()
    assert stack_running(tmp_path) is False


def test_non_loopback_host_needs_unsafe_expose_and_moto_stays_local(tmp_path):
    from openkcm.local.stack import LocalStack, StackOptions, is_loopback

    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost", "::ffff:127.0.0.1"):
        assert is_loopback(host), host
        LocalStack(StackOptions(data_dir=tmp_path, host=host))
    for host in ("0.0.0.0", "::", "192.0.2.1", "example.com", "localhost.example.com"):
        assert not is_loopback(host), host
        with pytest.raises(ValueError, match="--unsafe-expose"):
            LocalStack(StackOptions(data_dir=tmp_path, host=host))
    exposed = LocalStack(StackOptions(data_dir=tmp_path, host="0.0.0.0", unsafe_expose=True))
    assert exposed.moto._host == "127.0.0.1"
