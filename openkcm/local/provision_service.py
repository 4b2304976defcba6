"""Local services of issue 6 for ``openkcm local up``:

- ``provisioning``: the marketplace worker on a background thread (:class:`LocalProvisioningQueue`); the
  local HTTP adapter routes ``/v1/marketplace/`` to ``functions.provision.handler.webhook_handler``,
  which hands events to this queue because no SQS queue URL is configured.
- ``rotation``: the rotation Lambda's handler on the same schedule expression as the EventBridge rule
  (``OPENKCM_ROTATION_SCHEDULE``, ``rate(<n> minute|minutes|hour|hours|day|days)``); the last run is kept
  in ``<data-dir>/schedules/rotation.json``, and a run that is overdue at start happens right away
  (:mod:`openkcm.local.schedule`).
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openkcm.local.schedule import LastRun, run_on_schedule
from openkcm.ops import events, provisioning

if TYPE_CHECKING:
    from openkcm.local.stack import LocalStack

_RATE = re.compile(r"^rate\(\s*(\d+)\s+(minute|minutes|hour|hours|day|days)\s*\)\Z")
_UNIT = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86400, "days": 86400}


def schedule_seconds(expression: str) -> float:
    """Seconds between runs of an EventBridge ``rate(...)`` expression (cron is AWS-only)."""
    match = _RATE.match(expression.strip())
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"local schedules understand rate(<n> <unit>) only, not {expression!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


def scheduled_event(expression: str) -> dict[str, Any]:
    return {
        "source": "aws.events",
        "detail-type": "Scheduled Event",
        "detail": {},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "resources": [f"local:{expression}"],
    }


class ProvisioningService:
    name = "provisioning"

    def __init__(self) -> None:
        self.queue: provisioning.LocalProvisioningQueue | None = None
        self._unsubscribe: Any = None

    def start(self, stack: LocalStack) -> dict[str, Any]:
        runtime = stack.runtime
        assert runtime is not None
        events.ensure_bus(runtime)
        self._unsubscribe = events.subscribe_keyring(runtime.keyring)
        provisioning.webhook_secret(runtime)  # creates the 0600 secret file on first start
        self.queue = provisioning.LocalProvisioningQueue(
            runtime, journal=Path(runtime.settings.data_dir) / "provision-queue.jsonl"
        )
        provisioning.set_local_queue(self.queue)
        return {
            "webhook": "POST /v1/marketplace/events on the API port (X-OpenKCM-Signature)",
            "webhook_secret": str(Path(runtime.settings.data_dir) / "secrets" / "webhook-secret"),
        }

    def healthy(self) -> bool:
        return self.queue is not None and self.queue.alive()

    def stop(self) -> None:
        if self.queue is not None:
            self.queue.stop()
        provisioning.set_local_queue(None)
        if self._unsubscribe:
            self._unsubscribe()


class RotationScheduleService:
    name = "rotation"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.runs = 0
        self.last_report: dict[str, Any] = {}

    def start(self, stack: LocalStack) -> dict[str, Any]:
        runtime = stack.runtime
        assert runtime is not None
        expression = runtime.settings.rotation_schedule
        interval = schedule_seconds(expression)

        last_run = LastRun(Path(runtime.settings.data_dir), self.name)

        def run() -> None:
            from functions.rotate import handler as rotate

            try:
                self.last_report = rotate.handler(scheduled_event(expression), None, runtime=runtime)
            except Exception as exc:  # noqa: BLE001 - keep the schedule alive; the next run retries
                self.last_report = {"error": type(exc).__name__}
            self.runs += 1

        self._thread = threading.Thread(target=run_on_schedule, args=(last_run, interval, run, self._stop),
                                        daemon=True, name="rotation-schedule")
        self._thread.start()
        return {"schedule": expression, "on_demand": "openkcm rotate run"}

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
