"""The audit log newest first: pages of interleaved writers come out latest first with nothing skipped or
repeated, a page of a long trail reads and parses only the links around it, and links written before the
span bound (which may reach an hour past their first event) are still placed right."""

from __future__ import annotations

from datetime import timedelta

import pytest

from openkcm.clock import ManualClock
from openkcm.domain.audit import analytics, iter_events, read_page
from openkcm.domain.audit import sink as sink_module
from openkcm.domain.audit.chain import spans_bounded_since
from openkcm.errors import InvalidRequest
from tests.audit.helpers import event, events_of, items, table
from tests.audit.test_paging import START, _sink, write_interleaved_trail, write_spaced_links

UNTIL = START + timedelta(hours=1)


def _all_pages(tenant_id: str, limit: int, **filters) -> list[dict]:
    pages, token = [], None
    while True:
        page, token = read_page(tenant_id, limit=limit, next_token=token, newest_first=True, **filters)
        pages.extend(page)
        if token is None:
            return pages


def _ids(events: list[dict]) -> list[str]:
    return [e["object_id"] for e in events]


@pytest.fixture
def links_parsed(monkeypatch):
    seen = {"links": 0}
    original = analytics.item_events_and_digests

    def counting(item):
        seen["links"] += 1
        return original(item)

    monkeypatch.setattr(analytics, "item_events_and_digests", counting)
    return seen


def test_pages_of_interleaved_writers_newest_first_with_nothing_skipped(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory().tenant_id
    write_interleaved_trail(runtime, tenant, tmp_path)
    stored = [e for item in items(tenant) for e in events_of(item) if e["object_id"].startswith("obj-")]
    expected = sorted(stored, key=lambda e: (e["time"], e["event_id"]), reverse=True)
    assert len(expected) == 90
    for limit in (1, 4, 9, 1000):
        got = [e for e in _all_pages(tenant, limit, since=START, until=UNTIL, kinds=None) if e in stored]
        assert got == expected, limit
    security = _all_pages(tenant, 4, since=START, until=UNTIL, kinds={"security"})
    assert _ids(security) == [f"obj-{n}" for n in reversed(range(0, 90, 11))]
    window = (START + timedelta(seconds=6), START + timedelta(seconds=15))
    inside = [e for e in expected if window[0].isoformat() <= e["time"] < window[1].isoformat()]
    assert _all_pages(tenant, 3, since=window[0], until=window[1], kinds=None) == inside
    assert list(iter_events(tenant, since=window[0], until=window[1], newest_first=True)) == inside


def test_the_newest_page_of_a_long_trail_reads_the_links_around_it(
    runtime,
    tenant_factory,
    tmp_path,
    links_read,
    links_parsed,
):
    tenant = tenant_factory().tenant_id
    write_spaced_links(runtime, tenant, tmp_path / "wal")
    links_read["links"] = links_parsed["links"] = 0
    page, token = read_page(
        tenant, since="", until=UNTIL, kinds={"operation"}, limit=5, next_token=None, newest_first=True
    )
    assert _ids(page) == [f"obj-{n}" for n in range(159, 154, -1)]
    assert links_read["links"] <= 3 and links_parsed["links"] <= 3, (links_read, links_parsed)
    links_read["links"] = links_parsed["links"] = 0
    older, _ = read_page(
        tenant, since="", until=UNTIL, kinds={"operation"}, limit=5, next_token=token, newest_first=True
    )
    assert _ids(older) == [f"obj-{n}" for n in range(154, 149, -1)]
    assert links_read["links"] <= 3 and links_parsed["links"] <= 3, (links_read, links_parsed)
    everything = _all_pages(tenant, 7, since=START, until=UNTIL, kinds={"operation"})
    assert _ids(everything) == [f"obj-{n}" for n in reversed(range(160))]


def test_records_out_of_time_order_inside_a_link(runtime, tenant_factory, tmp_path):
    """KMIP pool threads take the time before the sink's lock: a link's records need not be in time order."""
    tenant = tenant_factory().tenant_id
    sink = _sink(runtime, tmp_path / "wal", ManualClock(START))
    try:
        for n, seconds in enumerate((5, 1, 3, 2, 4)):
            at = (START + timedelta(seconds=seconds)).isoformat(timespec="microseconds")
            sink.record(event(tenant, n, time=at), sync=False)
        sink.flush()
    finally:
        sink.close()
    assert _ids(_all_pages(tenant, 2, since=START, until=UNTIL, kinds=None)) == [
        "obj-0",
        "obj-4",
        "obj-2",
        "obj-3",
        "obj-1",
    ]


def test_links_written_before_the_bound_newest_first(runtime, tenant_factory, tmp_path, monkeypatch):
    """An earlier version's writer cut one link per flush whatever it spanned, and left no span marker: a
    wide link that starts before a narrow one can still hold later events."""
    tenant = tenant_factory().tenant_id
    runtime.audit.flush()
    table().delete_item(Key={"tenant_id": tenant, "sk": "B#spans"})
    clock = ManualClock(START)
    with monkeypatch.context() as old_writer:
        old_writer.setattr(sink_module, "_span", lambda first, last: timedelta(0))
        old_writer.setattr(sink_module, "mark_spans_bounded", lambda tenant_id, now: None)
        wide = _sink(runtime, tmp_path / "old-wide", clock)
        early = _sink(runtime, tmp_path / "old-early", clock)
        late = _sink(runtime, tmp_path / "old-late", clock)
        try:
            for n in range(30):  # the wide link spans 29 s; two narrow ones lie inside it
                wide.record(event(tenant, n), sync=False)
                if n in (10, 11):
                    early.record(event(tenant, 100 + n), sync=False)
                if n in (27, 28):
                    late.record(event(tenant, 100 + n), sync=False)
                clock.advance(1)
            for writer in (wide, early, late):
                writer.flush()
        finally:
            for writer in (wide, early, late):
                writer.close()
    assert spans_bounded_since(tenant) is None
    # Read by descending first time: late, early, then wide. Had the reader bounded the wide link by
    # LINK_MAX_SPAN, it would have given late's records before wide's obj-29.
    expected = ["obj-29", "obj-128", "obj-28", "obj-127", "obj-27", *(f"obj-{n}" for n in range(26, 11, -1))]
    expected += ["obj-111", "obj-11", "obj-110", *(f"obj-{n}" for n in range(10, -1, -1))]
    assert _ids(_all_pages(tenant, 4, since=START, until=UNTIL, kinds=None)) == expected
    sink = _sink(runtime, tmp_path / "new", clock)  # the upgraded writer marks the tenant: bounded from now
    try:
        clock.advance(5)
        sink.record(event(tenant, 30), sync=False)
        sink.flush()
    finally:
        sink.close()
    assert spans_bounded_since(tenant) is not None
    assert _ids(_all_pages(tenant, 4, since=START, until=UNTIL, kinds=None)) == ["obj-30", *expected]


def test_a_bad_token_is_refused_newest_first(runtime, tenant_factory):
    tenant = tenant_factory().tenant_id
    with pytest.raises(InvalidRequest):
        read_page(tenant, since=START, until=UNTIL, kinds=None, limit=5, next_token="x", newest_first=True)
    with pytest.raises(InvalidRequest):
        list(iter_events(tenant, after=("not a time", "e"), newest_first=True))


def test_a_rare_kind_does_not_make_a_page_fetch_every_link(runtime, tenant_factory, tmp_path, links_parsed):
    """Links whose stored kinds cannot match the filter are passed over, oldest first or newest first."""
    tenant = tenant_factory().tenant_id
    clock = ManualClock(START)
    sink = _sink(runtime, tmp_path / "wal", clock)
    try:
        sink.record(event(tenant, 0, kind="security", result="denied"), sync=False)
        sink.flush()
        for n in range(1, 40):
            clock.advance(1)
            sink.record(event(tenant, n), sync=False)
            sink.flush()
    finally:
        sink.close()
    for newest_first in (True, False):
        links_parsed["links"] = 0
        page = list(
            iter_events(tenant, since=START, until=UNTIL, kinds={"security"}, newest_first=newest_first)
        )
        assert _ids(page) == ["obj-0"]
        assert links_parsed["links"] <= 2, (newest_first, links_parsed)
