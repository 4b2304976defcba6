"""Reading the trail back page by page: a page reads the links around it (not the tenant's whole trail),
pages of interleaved writers come out in time order with nothing skipped or repeated, and a writer never
stores a link whose events lie further apart than LINK_MAX_SPAN (the bound the reader relies on)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from openkcm.clock import ManualClock
from openkcm.domain.audit import ChainedAuditSink, iter_events, read_events, read_page
from openkcm.domain.audit import sink as sink_module
from openkcm.domain.audit.chain import LINK_MAX_SPAN, spans_bounded_since
from openkcm.errors import InvalidRequest
from openkcm.ops import audit
from tests.audit.helpers import event, events_of, items, table

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _sink(runtime, path: Path, clock: ManualClock) -> ChainedAuditSink:
    sink = ChainedAuditSink(wal_dir=path, clock=clock, flush_interval=3600, authenticator=runtime.root)
    sink.set_wal_fsync(False)
    return sink


def write_spaced_links(runtime, tenant: str, wal: Path) -> None:
    """40 links of 4 events, one every 30 s from START: 20 minutes of trail."""
    clock = ManualClock(START)
    sink = _sink(runtime, wal, clock)
    try:
        for n in range(40):
            for k in range(4):
                sink.record(event(tenant, 4 * n + k), sync=False)
                clock.advance(0.5)
            sink.flush()
            clock.advance(28)
    finally:
        sink.close()


def write_interleaved_trail(runtime, tenant: str, tmp_path: Path) -> None:
    """90 events from START, 0.3 s apart, every third from each of three writers that flush at different
    moments; every 11th a security refusal."""
    clock = ManualClock(START)
    sinks = [_sink(runtime, tmp_path / f"wal-{w}", clock) for w in range(3)]
    try:
        for n in range(90):
            writer = sinks[n % 3]
            kind = "security" if n % 11 == 0 else "operation"
            writer.record(
                event(tenant, n, kind=kind, result="denied" if kind == "security" else "success"), sync=False
            )
            clock.advance(0.3)
            if n % (5 + n % 3) == 0:
                writer.flush()
        for writer in sinks:
            writer.flush()
    finally:
        for writer in sinks:
            writer.close()


def _all_pages(tenant_id: str, limit: int, **filters) -> list[dict]:
    pages, token = [], None
    while True:
        page, token = read_page(tenant_id, limit=limit, next_token=token, **filters)
        pages.extend(page)
        if token is None:
            return pages


def test_a_page_reads_the_links_around_it_not_the_whole_trail(runtime, tenant_factory, tmp_path, links_read):
    tenant = tenant_factory().tenant_id
    write_spaced_links(runtime, tenant, tmp_path / "wal")
    assert len(items(tenant)) >= 40
    until = START + timedelta(hours=1)

    links_read["links"] = 0
    first, token = read_page(tenant, since=START, until=until, kinds={"operation"}, limit=5, next_token=None)
    assert [e["object_id"] for e in first] == [f"obj-{n}" for n in range(5)]
    assert links_read["links"] <= 3, links_read  # before: every link of the tenant, on every page

    links_read["links"] = 0
    middle = START + timedelta(minutes=10)
    page, _ = read_page(tenant, since=middle, until=until, kinds=None, limit=5, next_token=None)
    assert page and all(e["time"] >= middle.isoformat() for e in page)
    assert links_read["links"] <= 3, links_read
    # DynamoDB reads (and bills) what the key range covers, filtered or not: it starts just before the page
    assert links_read["from"][-1] >= (middle - LINK_MAX_SPAN - timedelta(seconds=1)).isoformat()

    links_read["links"] = 0
    deeper, _ = read_page(tenant, since=START, until=until, kinds={"operation"}, limit=5, next_token=token)
    assert [e["object_id"] for e in deeper] == [f"obj-{n}" for n in range(5, 10)]
    assert links_read["links"] <= 3, links_read
    assert (
        links_read["from"][-1]
        >= (datetime.fromisoformat(first[-1]["time"]) - timedelta(seconds=12)).isoformat()
    )

    everything = _all_pages(tenant, 7, since=START, until=until, kinds={"operation"})
    assert [e["object_id"] for e in everything] == [f"obj-{n}" for n in range(160)]


def test_pages_of_interleaved_writers_are_in_time_order_with_nothing_skipped(
    runtime, tenant_factory, tmp_path
):
    tenant = tenant_factory().tenant_id
    write_interleaved_trail(runtime, tenant, tmp_path)
    stored = [e for item in items(tenant) for e in events_of(item) if e["object_id"].startswith("obj-")]
    expected = sorted(stored, key=lambda e: (e["time"], e["event_id"]))
    assert len(expected) == 90
    until = START + timedelta(hours=1)
    for limit in (1, 4, 9, 1000):
        got = [
            e
            for e in _all_pages(tenant, limit, since=START, until=until, kinds=None)
            if e["object_id"].startswith("obj-")
        ]
        assert got == expected, limit
    security = _all_pages(tenant, 4, since=START, until=until, kinds={"security"})
    assert [e["object_id"] for e in security] == [f"obj-{n}" for n in range(0, 90, 11)]
    window = (START + timedelta(seconds=6), START + timedelta(seconds=15))
    inside = [e for e in expected if window[0].isoformat() <= e["time"] < window[1].isoformat()]
    assert _all_pages(tenant, 3, since=window[0], until=window[1], kinds=None) == inside
    assert read_events(tenant, since=window[0], until=window[1]) == inside
    assert [e for e in iter_events(tenant, since=window[0], until=window[1])] == inside


def test_a_backlog_is_split_into_links_that_each_span_at_most_the_bound(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory().tenant_id
    clock = ManualClock(START)
    sink = _sink(runtime, tmp_path / "wal", clock)
    try:
        for n in range(36):  # 35 s of events behind one flush (an outage of the store, say)
            sink.record(event(tenant, n), sync=False)
            clock.advance(1)
        sink.flush()
    finally:
        sink.close()
    links = sorted((i for i in items(tenant) if i["writer"] == sink.writer_id), key=lambda i: i["sk"])
    assert len(links) >= 4
    for item in links:
        times = [e["time"] for e in events_of(item)]
        assert (item["first_time"], item["last_time"]) == (min(times), max(times))
        span = datetime.fromisoformat(item["last_time"]) - datetime.fromisoformat(item["first_time"])
        assert span <= LINK_MAX_SPAN
    assert [e["object_id"] for item in links for e in events_of(item)] == [f"obj-{n}" for n in range(36)]
    assert audit.verify_tenant(runtime, tenant)["intact"]


def test_a_bad_token_is_refused(runtime, tenant_factory):
    tenant = tenant_factory().tenant_id
    with pytest.raises(InvalidRequest):
        read_page(
            tenant,
            since=START,
            until=START + timedelta(days=1),
            kinds=None,
            limit=5,
            next_token="not-a-token",
        )


def test_links_written_before_the_bound_are_still_read(runtime, tenant_factory, tmp_path, monkeypatch):
    """An earlier version's writer cut one link per flush, whatever it spanned, and left no span marker."""
    tenant = tenant_factory().tenant_id
    runtime.audit.flush()
    table().delete_item(Key={"tenant_id": tenant, "sk": "B#spans"})  # as if it all came from before
    clock = ManualClock(START)
    with monkeypatch.context() as old_writer:
        old_writer.setattr(sink_module, "_span", lambda first, last: timedelta(0))
        old_writer.setattr(sink_module, "mark_spans_bounded", lambda tenant_id, now: None)
        sink = _sink(runtime, tmp_path / "old", clock)
        try:
            for n in range(30):  # one link of 29 s (a flush interval of 60 s was allowed)
                sink.record(event(tenant, n), sync=False)
                clock.advance(1)
            sink.flush()
        finally:
            sink.close()
    assert spans_bounded_since(tenant) is None
    until = START + timedelta(hours=1)
    wanted = [f"obj-{n}" for n in range(20, 30)]
    since = START + timedelta(seconds=20)
    assert [e["object_id"] for e in read_events(tenant, since=since, until=until)] == wanted
    sink = _sink(runtime, tmp_path / "new", clock)  # the upgraded writer marks the tenant: bounded from now
    try:
        sink.record(event(tenant, 30), sync=False)
        sink.flush()
    finally:
        sink.close()
    assert spans_bounded_since(tenant) == clock.now().isoformat(timespec="microseconds")
    page, _ = read_page(tenant, since=since, until=until, kinds=None, limit=100, next_token=None)
    assert [e["object_id"] for e in page] == [*wanted, "obj-30"]  # near the old links: the wide margin


def test_a_tenant_whose_first_link_is_bounded_is_marked_from_the_start(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory().tenant_id
    runtime.audit.flush()  # the tenant's creation record, written by the (Lambda-mode) runtime sink
    assert spans_bounded_since(tenant) == "0"


def test_times_with_offsets_and_the_calendars_ends(runtime, tenant_factory, tmp_path):
    tenant = tenant_factory().tenant_id
    clock = ManualClock(START)
    sink = _sink(runtime, tmp_path / "wal", clock)
    try:
        for n in range(3):
            sink.record(event(tenant, n), sync=False)
            clock.advance(60)
        sink.flush()
    finally:
        sink.close()
    plus_two = (START + timedelta(seconds=60)).astimezone(timezone(timedelta(hours=2)))
    mine = {"obj-0", "obj-1", "obj-2"}

    def ids(events):
        return [e["object_id"] for e in events if e["object_id"] in mine]

    assert ids(read_events(tenant, since=plus_two)) == ["obj-1", "obj-2"]
    assert ids(read_events(tenant, since="2026-03-01T12:01:00Z")) == ["obj-1", "obj-2"]
    assert len(ids(read_events(tenant, since=START, until="9999-12-31T23:59:59.999999+00:00"))) == 3
    assert len(ids(read_events(tenant, since="0001-01-01T00:00:00+00:00", until="2100-01-01"))) == 3
    page, token = read_page(tenant, since=START, until="2100-01-01", kinds=None, limit=1, next_token=None)
    assert token and page[0]["object_id"] == "obj-0"
    with pytest.raises(InvalidRequest):
        read_page(tenant, since=START, until="2100-01-01", kinds=None, limit=1, next_token="NQ==")  # 5


def test_a_wide_link_from_an_earlier_version_does_not_mark_a_fresh_tenant(runtime, tmp_path, monkeypatch):
    """A link an earlier version computed (say, replayed from its links.wal) may span more than the bound:
    storing it must not mark the tenant bounded from the start."""
    tenant = "t-fresh-legacy"
    clock = ManualClock(START)
    sink = _sink(runtime, tmp_path / "wal", clock)
    try:
        with monkeypatch.context() as old_link:
            old_link.setattr(sink_module, "_span", _wide)
            for n in range(30):
                sink.record(event(tenant, n), sync=False)
                clock.advance(1)
            sink.flush()
        assert spans_bounded_since(tenant) is None
        since = START + timedelta(seconds=20)
        assert [e["object_id"] for e in read_events(tenant, since=since)] == [
            f"obj-{n}" for n in range(20, 30)
        ]
        sink.record(event(tenant, 30), sync=False)
        sink.flush()
        assert spans_bounded_since(tenant) == clock.now().isoformat(timespec="microseconds")
    finally:
        sink.close()


def _wide(first: str, last: str) -> timedelta:
    """What the earlier writer did: no split (zero while linking); what a stored link then spans (real)."""
    import inspect

    caller = inspect.stack()[1].function
    if caller == "_link":
        return timedelta(0)
    return datetime.fromisoformat(last) - datetime.fromisoformat(first)
