"""A webhook answered 202 by the local stack survives SIGKILL: the local queue journals before it acks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

from openkcm.ops.provisioning import LocalProvisioningQueue

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_accepted_message_is_processed_after_a_kill(runtime, tmp_path):
    journal = tmp_path / "queue.jsonl"
    # A child process accepts two messages whose worker never finishes, then is SIGKILLed.
    child = textwrap.dedent(
        f"""
        import sys, time
        from openkcm.ops.provisioning import LocalProvisioningQueue
        queue = LocalProvisioningQueue(None, journal=__import__("pathlib").Path({str(journal)!r}),
                                       worker=lambda runtime, message: time.sleep(3600))
        queue({{"event_id": "evt-1"}})
        queue({{"event_id": "evt-2"}})
        print("accepted", flush=True)
        time.sleep(3600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "accepted"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    seen: list[str] = []
    queue = LocalProvisioningQueue(runtime, journal=journal, worker=lambda rt, message: seen.append(message["event_id"]))
    try:
        assert queue.wait_idle(10)
        assert sorted(seen) == ["evt-1", "evt-2"]
        assert "_qid" not in json.dumps(seen)
    finally:
        queue.stop()
    # everything finished: the journal was compacted and a third start re-runs nothing
    assert journal.read_text() == ""
    again: list[str] = []
    queue = LocalProvisioningQueue(runtime, journal=journal, worker=lambda rt, message: again.append(message))
    try:
        time.sleep(0.2)
        assert queue.wait_idle(5) and again == []
    finally:
        queue.stop()
