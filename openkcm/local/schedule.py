"""The local stand-in for an EventBridge rate rule: run a job every ``interval`` seconds on a thread, and
remember across restarts when it last ran (``<data-dir>/schedules/<name>.json``).

Without that record a stack restarted more often than the interval (a laptop, ``make run`` every
morning) would never run the job: the rotation schedule (also the L1 health probe and crypto-shredding)
is hourly. A job that is overdue at start, or has never run, runs right away.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from openkcm.files import write_private


class LastRun:
    def __init__(self, data_dir: Path, name: str) -> None:
        self.path = Path(data_dir) / "schedules" / f"{name}.json"

    def read(self) -> float | None:
        try:
            return float(json.loads(self.path.read_text(encoding="utf-8"))["last_run"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # never ran (or an unreadable record: run, as if never)

    def record(self, when: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_private(self.path, json.dumps({"last_run": when}).encode())

    def first_delay(self, interval: float, now: float | None = None) -> float:
        """Seconds to wait before the first run of this process: 0 when overdue or never run."""
        last = self.read()
        if last is None:
            return 0.0
        now = time.time() if now is None else now
        return min(interval, max(0.0, last + interval - now))  # a clock set back waits one interval at most


def run_on_schedule(last_run: LastRun, interval: float, job: Callable[[], None], stop: threading.Event) -> None:
    """The schedule's thread body: ``job`` when due, the start time recorded after each run, until ``stop``."""
    delay = last_run.first_delay(interval)
    while not stop.wait(delay):
        started = time.time()
        job()
        try:
            last_run.record(started)
        except OSError:
            pass  # the next start runs the job once more: harmless
        delay = interval
