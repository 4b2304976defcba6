"""The local provisioning queue's journal after a torn last line (found by a review; fails before the fix):
the fragment is cut off before appending, so the next accepted message is not glued to it and lost."""

from __future__ import annotations

import json

from openkcm.ops.provisioning import LocalProvisioningQueue


def _failing(runtime, message):
    raise RuntimeError("not now")  # retried a minute later: the message stays accepted, never finished


def test_message_accepted_after_a_torn_line_survives_the_next_restart(tmp_path):
    journal = tmp_path / "queue.jsonl"
    accepted = json.dumps({"accepted": {"event_id": "evt-1", "_qid": "q1"}}, separators=(",", ":"))
    journal.write_text(accepted + "\n" + '{"accepted":{"event_id":"evt-to')  # SIGKILL mid-append

    queue = LocalProvisioningQueue(None, journal=journal, worker=_failing, base_delay=60, max_attempts=10)
    try:
        queue({"event_id": "evt-2"})  # acknowledged (the webhook answered 202)
    finally:
        queue.stop()
    lines = journal.read_text().split("\n")
    assert lines[-1] == "" and all(json.loads(line) for line in lines[:-1])  # no fragment left

    seen: list[str] = []
    queue = LocalProvisioningQueue(None, journal=journal, worker=lambda rt, m: seen.append(m["event_id"]))
    try:
        assert queue.wait_idle(10)
    finally:
        queue.stop()
    assert sorted(seen) == ["evt-1", "evt-2"]
