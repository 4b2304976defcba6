"""Rotation Lambda (issue 6): run by an EventBridge schedule (e.g. ``rate(1 hour)``); locally the same
handler runs on the same schedule expression inside ``openkcm local up``.

The scheduled event's ``detail`` may carry ``{"action": "rotate-root"}`` (an operator's one-off rule or
``openkcm rotate root``) to rotate the internal root key first.
"""

from __future__ import annotations

from typing import Any

from openkcm.ops import rotation
from openkcm.ops.runtime import Runtime, build_runtime

_RUNTIME: Runtime | None = None


def _runtime() -> Runtime:
    global _RUNTIME
    if _RUNTIME is None:
        _RUNTIME = build_runtime()
    return _RUNTIME


def handler(event: dict[str, Any], context: Any = None, runtime: Runtime | None = None) -> dict[str, Any]:
    runtime = runtime or _runtime()
    # Leave a margin of the Lambda's time for the report; whatever is left is done on the next run.
    budget = context.get_remaining_time_in_millis() / 1000 - 10 if context is not None else 600.0
    detail = event.get("detail") or {}
    result: dict[str, Any] = {}
    if isinstance(detail, dict) and detail.get("action") == "rotate-root":
        result["root"] = rotation.rotate_root(runtime, actor="rotation-schedule")
    result.update(rotation.run_schedule(runtime, budget_seconds=max(budget, 1.0)).to_dict())
    return result
