"""Verification of a tenant's whole trail: archive segments, live links and signed checkpoints.

It names the first problem it finds (ordered by time) as one of ``missing``, ``altered``, ``reordered``,
``inserted``, ``forged_checkpoint``, ``missing_checkpoint``, ``archive``; otherwise it says
"N records, chain intact through checkpoint C". Records written after the latest checkpoint are counted
as *unconfirmed*: their hashes chain, but nothing signed vouches for them yet.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from openkcm.domain.audit.archive import ARCHIVE_PREFIX, ArchiveStore, read_segment
from openkcm.domain.audit.chain import (
    GENESIS,
    Link,
    RecordFacts,
    frame_problem,
    link_hash,
    load_writer_keys,
    mac_valid,
    pack_digests,
    parse_link_sk,
    query_links,
    read_checked_link,
    unpack_digests,
    writer_key_context,
)
from openkcm.domain.audit.checkpoints import Checkpoint, CheckpointSigner, load_checkpoints
from openkcm.domain.audit.events import event_digest
from openkcm.domain.wrapping import WrappingKey
from openkcm.errors import IntegrityFailure
from openkcm.storage.audit_models import AuditArchiveModel, bind_audit_models

MAX_PROBLEMS = 50


@dataclass(slots=True)
class _Entry:
    """What the chain walk needs of a link whose records were already checked against its digests. The
    records themselves are not kept: a busy tenant's trail holds millions, and parsed they took ~2 KB each."""

    seq: int
    prev_hash: str
    hash: str
    mac: str
    digests: bytes | list[str]  # raw, or the stored hex strings when they are not hex (damage)
    count: int  # records present (a deleted one is not)
    first_time: str
    last_time: str
    records_ok: bool
    content: str  # SHA-256 over the digests of the records actually present, in order
    # What the record check found, reported in the walk (after the checkpoints, which the cap on problems
    # must not crowd out).
    problems: list[tuple[str, dict[str, Any]]]

    def hex_digests(self) -> list[str]:
        return unpack_digests(self.digests) if isinstance(self.digests, bytes) else self.digests


def _entry(link: Link, first_time: str = "", last_time: str = "") -> _Entry:
    """Check ``link``'s records against its digests and keep what the walk needs. A link from
    :func:`read_checked_link` without records has been checked already; ``first_time`` and ``last_time``
    are then its stored ones."""
    found = _Report()
    if link.events is None:
        ok, count, actual = True, link.count, link.digests
    else:
        actual = [event_digest(e) for e in link.events]
        ok = _check_events(link, found, actual)
        count = len(link.events)
        if link.events:
            first_time, last_time = _time_of(link.events[0]), _time_of(link.events[-1])
    digests: bytes | list[str] = list(link.digests)
    if all(isinstance(d, str) and len(d) == 64 for d in link.digests):
        try:
            digests = pack_digests(link.digests)
        except ValueError:
            pass  # not hex: kept as stored, so the link hash is computed over exactly those strings
    content = hashlib.sha256(",".join(actual).encode()).hexdigest()
    return _Entry(
        link.seq,
        link.prev_hash,
        link.hash,
        link.mac,
        digests,
        count,
        first_time,
        last_time,
        ok,
        content,
        found.problems,
    )


def _frame(item: Any, facts: RecordFacts, report: _Report, writer: str, position: int) -> None:
    """Name a link whose unhashed index attributes misstate its records (see ``frame_problem``)."""
    problem = frame_problem(item.first_time or "", item.last_time or "", list(item.kinds or []), facts)
    if problem:
        report.add(
            facts[0] or item.first_time,
            "altered",
            f"writer {writer} link {position}: {problem}, which would keep records out of the audit log",
            writer=writer,
            seq=position,
        )


def _time_of(event: dict[str, Any]) -> str:
    when = event.get("time")
    return when if isinstance(when, str) else ""


@dataclass
class _Report:
    problems: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def add(self, when: str, kind: str, message: str, **where: Any) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append((when or "", {"kind": kind, "message": message, **where}))

    def extend(self, problems: list[tuple[str, dict[str, Any]]]) -> None:
        self.problems.extend(problems[: max(0, MAX_PROBLEMS - len(self.problems))])


def _check_events(link: Link, report: _Report, actual: list[str]) -> bool:
    """Compare each packed event (``actual``: their digests) with the digest list; name the one that
    differs."""
    events = link.events or []
    if actual == link.digests:
        return True
    where = {"writer": link.writer, "seq": link.seq}
    when = _time_of(events[0]) if events else ""
    stored = set(link.digests)
    extra = [i for i, d in enumerate(actual) if d not in stored]
    if not extra and Counter(actual) == Counter(link.digests):
        i = next(i for i, (a, b) in enumerate(zip(actual, link.digests, strict=True)) if a != b)
        report.add(
            when,
            "reordered",
            f"record {events[i].get('event_id')} is out of order in writer "
            f"{link.writer} link {link.seq} (position {i})",
            event_id=events[i].get("event_id"),
            **where,
        )
    elif extra and len(actual) > len(link.digests) and len(actual) - len(extra) == len(link.digests):
        e = events[extra[0]]
        report.add(
            _time_of(e) or when,
            "inserted",
            f"record {e.get('event_id')} was inserted into writer {link.writer} link {link.seq}",
            event_id=e.get("event_id"),
            **where,
        )
    elif extra and len(actual) == len(link.digests):
        e = events[extra[0]]
        report.add(
            _time_of(e) or when,
            "altered",
            f"record {e.get('event_id')} in writer {link.writer} link {link.seq} was altered",
            event_id=e.get("event_id"),
            **where,
        )
    elif len(actual) < len(link.digests):
        missing = [i for i, d in enumerate(link.digests) if d not in set(actual)]
        report.add(
            when,
            "missing",
            f"record #{missing[0]} of writer {link.writer} link {link.seq} was deleted",
            position=missing[0],
            **where,
        )
    else:
        report.add(when, "altered", f"writer {link.writer} link {link.seq} was altered", **where)
    return False


def _load_archive(
    tenant_id: str,
    store: ArchiveStore | None,
    report: _Report,
    links: dict[str, dict[int, _Entry]],
    checkpoints: dict[int, Checkpoint],
) -> dict[str, int]:
    bind_audit_models()
    manifests = {
        item.object_key: item
        for item in AuditArchiveModel.query(tenant_id, AuditArchiveModel.sk.startswith(ARCHIVE_PREFIX))
    }
    summary = {"segments": 0, "links": 0, "records": 0}
    if store is None:
        if manifests:
            report.add(
                "", "archive", f"{len(manifests)} archived segments exist but no archive is configured"
            )
        return summary
    keys = store.list(f"{tenant_id}/")
    prev = GENESIS
    for number, key in enumerate(keys, start=1):
        data = store.get(key)
        digest = hashlib.sha256(data).hexdigest()
        try:
            header, checkpoint, segment_links = read_segment(data)
        except (ValueError, KeyError, TypeError, OSError):
            report.add("", "archive", f"archive segment {key} is unreadable", segment=key)
            prev = digest
            continue
        if header.get("segment") != number or header.get("prev_segment") != prev:
            report.add(
                header.get("created", ""),
                "archive",
                f"archive segment {key} does not follow the "
                "previous segment (one is missing or was replaced)",
                segment=key,
            )
        manifest = manifests.pop(key, None)
        if manifest is not None and manifest.sha256 != digest:
            report.add(
                header.get("created", ""),
                "archive",
                f"archive segment {key} differs from its manifest",
                segment=key,
            )
        if checkpoint is not None:
            checkpoints.setdefault(checkpoint.seq, checkpoint)
        for link in segment_links:
            links.setdefault(link.writer, {})[link.seq] = _entry(link)
        summary["segments"] += 1
        summary["links"] += len(segment_links)
        summary["records"] += sum(len(link.events or []) for link in segment_links)
        prev = digest
    for key in manifests:
        report.add(
            "",
            "archive",
            f"archive segment {key} is listed in the manifest but missing from the archive",
            segment=key,
        )
    return summary


def _writer_keys(
    tenant_id: str, links: dict[str, dict[int, _Entry]], authenticator: WrappingKey, report: _Report
) -> dict[str, bytes | None]:
    """Unwrap each writer's link-MAC key; a writer without a valid key record wrote nothing we trust."""
    items = load_writer_keys(tenant_id)
    keys: dict[str, bytes | None] = {}
    for writer, chain in sorted(links.items()):
        first = chain[min(chain)]
        when = first.first_time
        item = items.get(writer)
        if item is None:
            keys[writer] = None
            report.add(
                when,
                "inserted",
                f"writer {writer} has no key record: its links were not written by an OpenKCM writer",
                writer=writer,
                seq=first.seq,
            )
            continue
        try:
            keys[writer] = authenticator.unwrap(bytes(item.wrapped), writer_key_context(writer))
        except IntegrityFailure:
            keys[writer] = None
            report.add(
                when,
                "inserted",
                f"the key record of writer {writer} does not unwrap (forged)",
                writer=writer,
                seq=first.seq,
            )
    return keys


def verify_tenant_chain(
    tenant_id: str,
    signer: CheckpointSigner,
    archive: ArchiveStore | None = None,
    authenticator: WrappingKey | None = None,
) -> dict[str, Any]:
    """With ``authenticator`` (the root key) every link must also carry its writer's MAC."""
    report = _Report()
    links: dict[str, dict[int, _Entry]] = {}
    archived_cps: dict[int, Checkpoint] = {}
    archive_summary = _load_archive(tenant_id, archive, report, links, archived_cps)

    # Live links: a live copy of an archived link must be identical to it.
    bind_audit_models()
    for item in query_links(tenant_id):
        parsed = parse_link_sk(item.sk)
        if parsed is None:
            report.add(item.first_time, "inserted", f"item {item.sk} is not a chain position", sk=item.sk)
            continue
        writer, position = parsed
        link, facts = read_checked_link(item)
        _frame(item, facts, report, writer, position)
        archived = links.get(writer, {}).get(position)
        if archived is not None:
            live = _entry(link)
            if (archived.hash, archived.prev_hash, archived.hex_digests(), archived.content) != (
                live.hash,
                live.prev_hash,
                live.hex_digests(),
                live.content,
            ):
                report.add(
                    item.first_time,
                    "altered",
                    f"writer {writer} link {position} differs from its archived copy",
                    writer=writer,
                    seq=position,
                )
            continue
        links.setdefault(writer, {})[position] = _entry(link, item.first_time or "", item.last_time or "")

    # Checkpoints: numbered, chained by the previous body's digest, signed.
    checkpoints = {cp.seq: cp for cp in load_checkpoints(tenant_id)}
    for seq, cp in archived_cps.items():
        live = checkpoints.get(seq)
        if live is None:
            checkpoints[seq] = cp
        elif live.digest != cp.digest or live.signature != cp.signature:
            report.add(
                cp.body.get("time", ""),
                "forged_checkpoint",
                f"checkpoint {seq} differs from the copy in the archive",
                checkpoint=seq,
            )
    trusted: list[Checkpoint] = []
    prev_digest = GENESIS
    for expected, seq in enumerate(sorted(checkpoints), start=1):
        cp = checkpoints[seq]
        when = cp.body.get("time", "")
        if seq != expected:
            report.add(when, "missing_checkpoint", f"checkpoint {expected} is missing", checkpoint=expected)
            break
        if cp.body.get("tenant_id") != tenant_id or not cp.signature_valid(signer):
            report.add(
                when,
                "forged_checkpoint",
                f"checkpoint {seq} does not carry a valid signature",
                checkpoint=seq,
            )
            break
        if cp.body.get("prev") != prev_digest:
            report.add(
                when,
                "forged_checkpoint",
                f"checkpoint {seq} does not follow checkpoint {seq - 1}",
                checkpoint=seq,
            )
            break
        trusted.append(cp)
        prev_digest = cp.digest.hex()

    # Each writer's chain, position by position.
    signed_heads: dict[str, int] = {}
    for cp in trusted:
        for writer, (seq, _) in cp.heads.items():
            signed_heads[writer] = max(signed_heads.get(writer, 0), seq)
    writer_keys = _writer_keys(tenant_id, links, authenticator, report) if authenticator else {}
    chain_hashes: dict[str, dict[int, str]] = {}
    records = unconfirmed = 0
    for writer, chain in sorted(links.items()):
        hashes = chain_hashes.setdefault(writer, {})
        all_hashes = {link.hash: link.seq for link in chain.values()}
        prev, last = GENESIS, max(chain)
        for position in range(1, last + 1):
            link = chain.get(position)
            if link is None:
                before = chain.get(position - 1)
                when = before.last_time if before else ""
                report.add(
                    when,
                    "missing",
                    f"writer {writer} link {position} is missing",
                    writer=writer,
                    seq=position,
                )
                prev = None  # unknown from here on; continue to find more problems
                continue
            when = link.first_time
            records += link.count
            ok = link.records_ok
            report.extend(link.problems)
            if link.seq != position:
                report.add(
                    when,
                    "reordered",
                    f"the link stored at writer {writer} position {position} was written as link {link.seq}",
                    writer=writer,
                    seq=position,
                )
                ok = False
            elif (
                ok and link_hash(link.prev_hash, tenant_id, writer, position, link.hex_digests()) != link.hash
            ):
                report.add(
                    when,
                    "altered",
                    f"writer {writer} link {position} was altered",
                    writer=writer,
                    seq=position,
                )
                ok = False
            elif ok and prev is not None and link.prev_hash != prev:
                if link.prev_hash in all_hashes and all_hashes[link.prev_hash] != position - 1:
                    report.add(
                        when,
                        "reordered",
                        f"writer {writer} link {position} follows link "
                        f"{all_hashes[link.prev_hash]}, not link {position - 1}",
                        writer=writer,
                        seq=position,
                    )
                else:
                    report.add(
                        when,
                        "inserted",
                        f"writer {writer} link {position} does not follow link {position - 1}",
                        writer=writer,
                        seq=position,
                    )
                ok = False
            key = writer_keys.get(writer)
            if ok and key is not None and not mac_valid(key, link):
                covered = position <= signed_heads.get(writer, 0)
                report.add(
                    when,
                    "altered" if covered else "inserted",
                    f"writer {writer} link {position} does not carry its writer's MAC (written by someone else)",
                    writer=writer,
                    seq=position,
                )
                ok = False
            hashes[position] = link.hash
            prev = link.hash if ok else None

    # Checkpoint heads must match what is stored (catches deleted tails and rewritten chains).
    confirmed: dict[str, int] = {}
    for cp in trusted:
        for writer, (seq, digest) in cp.heads.items():
            stored = chain_hashes.get(writer, {}).get(seq)
            if stored is None:
                report.add(
                    cp.body.get("time", ""),
                    "missing",
                    f"writer {writer} link {seq} named by checkpoint {cp.seq} is missing",
                    writer=writer,
                    seq=seq,
                    checkpoint=cp.seq,
                )
            elif stored != digest:
                report.add(
                    cp.body.get("time", ""),
                    "altered",
                    f"writer {writer} links up to {seq} differ from checkpoint {cp.seq}",
                    writer=writer,
                    seq=seq,
                    checkpoint=cp.seq,
                )
            confirmed[writer] = max(confirmed.get(writer, 0), seq)
    for writer, chain in links.items():
        unconfirmed += sum(link.count for s, link in chain.items() if s > confirmed.get(writer, 0))

    report.problems.sort(key=lambda p: p[0])
    problems = [p for _, p in report.problems]
    last_cp = trusted[-1] if trusted else None
    result: dict[str, Any] = {
        "tenant_id": tenant_id,
        "intact": not problems,
        "records": records,
        "writers": len(links),
        "links": sum(len(c) for c in links.values()),
        "checkpoint": {"seq": last_cp.seq, "time": last_cp.body.get("time"), "key_id": last_cp.key_id}
        if last_cp
        else None,
        "unconfirmed_records": unconfirmed,
        "archive": archive_summary,
        "problems": problems,
    }
    if problems:
        result["message"] = f"{problems[0]['kind']}: {problems[0]['message']}"
    elif last_cp is None:
        result["message"] = f"{records} records, chain intact; no checkpoint yet"
    else:
        result["message"] = f"{records} records, chain intact through checkpoint {last_cp.seq}"
        if unconfirmed:
            result["message"] += f" ({unconfirmed} newer records not yet checkpointed)"
    return result
