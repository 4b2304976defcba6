"""The local schedules (rotation: also the L1 health probe and crypto-shredding; audit) remember their
last run in the data directory and run at start when overdue (found by a review; fails before the fix:
they waited a full interval first, so a stack restarted more often than hourly never rotated)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest

from openkcm.local.schedule import LastRun


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_last_run_first_delay(tmp_path):
    last = LastRun(tmp_path, "rotation")
    assert last.read() is None and last.first_delay(3600) == 0  # never ran: run now
    last.record(1000.0)
    assert json.loads((tmp_path / "schedules" / "rotation.json").read_text()) == {"last_run": 1000.0}
    assert last.first_delay(3600, now=1000.0 + 600) == 3000  # ran 10 minutes ago: the rest of the hour
    assert last.first_delay(3600, now=1000.0 + 7200) == 0  # overdue
    assert last.first_delay(3600, now=0.0) == 3600  # clock set back: one interval at most
    (tmp_path / "schedules" / "rotation.json").write_text("{torn")
    assert last.first_delay(3600) == 0


@pytest.fixture
def calls(monkeypatch):
    seen: list[str] = []
    from functions.rotate import handler as rotate
    from openkcm.ops import audit

    monkeypatch.setattr(rotate, "handler", lambda event, context, runtime: seen.append("rotation") or {})
    monkeypatch.setattr(audit, "run_schedule", lambda runtime, budget_seconds: seen.append("audit") or {})
    return seen


@pytest.mark.parametrize("name", ["rotation", "audit"])
def test_schedule_runs_at_start_when_overdue_and_not_before(runtime, calls, name):
    from openkcm.local.services import registered_services

    stack = SimpleNamespace(runtime=runtime, data_dir=runtime.settings.data_dir)
    record = runtime.settings.data_dir / "schedules" / f"{name}.json"

    def start_and_stop(wait_for_run: bool) -> None:
        runs = len(calls)
        service = next(s for s in registered_services() if s.name == name)
        service.start(stack)
        try:
            if wait_for_run:
                assert _wait_for(lambda: len(calls) > runs and record.exists()), f"{name} did not run at start"
            else:
                time.sleep(0.5)
        finally:
            service.stop()

    start_and_stop(wait_for_run=True)  # first start: never ran, so it runs now (before: after 1 h / 5 min)
    assert calls == [name]
    ran_at = json.loads(record.read_text())["last_run"]
    assert abs(ran_at - time.time()) < 30
    start_and_stop(wait_for_run=False)  # restarted soon after: not due yet
    assert calls == [name]
    record.write_text(json.dumps({"last_run": ran_at - 2 * 86400}))  # the stack was down for two days
    start_and_stop(wait_for_run=True)
    assert calls == [name, name]


def test_schedule_thread_stops_promptly():
    from openkcm.local.schedule import run_on_schedule

    stop = threading.Event()
    ran: list[int] = []

    class Never(LastRun):
        def __init__(self) -> None:
            pass

        def read(self) -> float:
            return time.time()

    thread = threading.Thread(target=run_on_schedule, args=(Never(), 3600, lambda: ran.append(1), stop))
    thread.start()
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and ran == []
