"""The audit schedule inside ``openkcm local up``: every ``audit_checkpoint_seconds`` (at least 1 s) it
checkpoints every tenant whose chains moved and archives records past the retention period to
``<data_dir>/audit/archive`` — what the audit schedule Lambda does in AWS. The last run is kept in
``<data_dir>/schedules/audit.json``; a run that is overdue at start happens right away."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openkcm.local.schedule import LastRun, run_on_schedule

if TYPE_CHECKING:
    from openkcm.local.stack import LocalStack


class AuditScheduleService:
    name = "audit"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last: dict[str, Any] = {}

    def start(self, stack: LocalStack) -> dict[str, Any]:
        from openkcm.ops import audit

        runtime = stack.runtime
        assert runtime is not None
        interval = max(1.0, runtime.settings.audit_checkpoint_seconds or 300.0)
        signer = audit.signer(runtime)  # creates the 0600 key on first start

        def run() -> None:
            try:
                self.last = audit.run_schedule(runtime, budget_seconds=interval)
            except Exception as exc:  # noqa: BLE001 (keep the schedule alive; the next round retries)
                self.last = {"error": type(exc).__name__}

        last_run = LastRun(Path(runtime.settings.data_dir), self.name)
        self._thread = threading.Thread(target=run_on_schedule, args=(last_run, interval, run, self._stop),
                                        daemon=True, name="audit-schedule")
        self._thread.start()
        return {
            "schedule": f"checkpoint + archive every {interval:g} s",
            "archive": str(Path(runtime.settings.data_dir) / "audit" / "archive"),
            "checkpoint key": f"{signer.key_id} (verify: openkcm audit verify --tenant T)",
        }

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
