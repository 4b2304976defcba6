"""The audit trail: one event schema and one sink that every adapter writes through (DECISIONS 4).

Layout: ``events`` (schema, canonical encoding) · ``chain`` (writer chains, links) · ``sink`` (the sink,
WAL, fail-closed) · ``checkpoints`` (signed checkpoints, signers) · ``verify`` · ``archive`` (retention)
· ``analytics`` (reading events and usage counters back).

Design, and why
- **Chains per writer, events packed per link, joined by signed checkpoints** — not a per-tenant counter.
  A per-tenant sequence allocated by conditional writes puts every writer of a busy tenant on one item:
  each event costs a read-modify-conditional-write round trip, writers collide and retry, and the tenant
  is capped well below DynamoDB's ~1,000 writes/s per partition key (less, with retries). Here each
  writer (one process start: a KMIP worker, a Lambda container) keeps its own hash chain per tenant and
  packs up to ``batch_events`` (8,000) events into one item (a *link*): ``hash = SHA-256(prev_hash ||
  canonical({tenant, writer, seq, digests}))`` with ``digests`` the SHA-256 of each event. Writers never
  coordinate. A link item stores its events zlib-compressed (a KMIP event is ~420 bytes of canonical
  JSON and ~20 compressed) plus 32 raw bytes of digest per event, cut so the item stays under 300 KB
  (DynamoDB's limit is 400 KB; links are cut to fit from the bytes per event of the previous link). A
  batch is linked once 8,000 events wait or the oldest has waited ``audit_flush_seconds`` (1 s), so a
  tenant doing 20,000 audited ops/s needs a handful of item writes per second per writer (plus one
  usage-counter ADD per day/operation/service per flush). A scheduled checkpointer (or the sink's flusher, when configured)
  verifies what was added since the last checkpoint and signs the heads of all writer chains of the
  tenant (ECDSA P-256: a local 0600 key file, or KMS ``ECC_NIST_P256`` ``kms:Sign``), so the
  independent chains become one signed statement an operator cannot forge without the signing key.
- **Nothing lost.** With a WAL (long-lived processes) ``record`` appends the event's canonical encoding
  (computed once; the same bytes give its digest and go into the link item) to ``events.wal`` before it
  returns (``sync=False`` + :meth:`AuditSink.sync` is a group commit); the flusher moves that file aside
  (a rename under the recorders' lock, nothing slower), turns its events into links, fsyncs them to
  ``links.wal`` outside the lock, deletes the moved file, and writes the links with
  ``attribute_not_exists`` so replay after SIGKILL is idempotent (replay reads moved files too). Each process flocks
  its own WAL slot; a crashed process's slot is replayed by the next process that claims it. Without a
  WAL (Lambdas, CLI) ``record`` writes the link before it returns.
- **Fail closed, bounded, only stricter.** :meth:`AuditSink.ensure_writable` is called *before* an
  operation acts: in WAL mode it raises :class:`~openkcm.errors.AuditUnavailable` once ``max_pending``
  events wait for an unreachable store (Vault's audit-device behaviour); without a WAL it probes the
  store (at most every ``probe_interval`` s, and always after a failure). ``max_pending`` can only be
  lowered (``OPENKCM_AUDIT_MAX_PENDING``, at most 20,000).
- **The KMIP hot path.** A KMIP connection's events share tenant, certificate subject, service and client
  address: :class:`EventTemplate` validates and JSON-encodes those once, and
  :meth:`AuditSink.record_from` writes only the varying fields into the pre-encoded frame — the same
  canonical bytes, the same refusal rules (``tests/audit/test_templates.py`` checks both against
  :class:`AuditEvent`), a third of the CPU. The line joins an in-memory list; the listener's one
  :meth:`AuditSink.sync` per event-loop pass hands the pass's lines to the OS in one write.
- **Never a secret.** Events hold identifiers, names and reasons; every text field is length-bounded,
  bytes are refused, PEM blocks and long hex/base64 runs are refused outright (a test also scans every
  stored item and log line of representative operations).
- **Writer MACs.** Hashes alone can be recomputed by anyone with table write access. Each writer
  therefore also MACs every link hash (HMAC-SHA256) with a random per-process key that is stored only
  wrapped by the root key (``K#<writer>`` in the tenant's partition; KMS in AWS). Forging a link, or a
  whole writer, needs the root key's unwrap permission, not just the table.
- **What is and is not proven.** Deleting, editing, reordering or inserting a link or an event inside
  one is detected by hashes, digests and MACs; rewriting a chain consistently is detected by the MACs
  and the signed checkpoint heads; records after the latest checkpoint are reported as *unconfirmed*
  (their MACs verify, but nothing signed covers them yet). Deleting the newest links together with the
  newest checkpoints is only detectable against an outside copy: the archive segments (S3 Object Lock)
  carry the checkpoint that covers them, and checkpoints are never expired from the table. A link's
  index attributes (``first_time``, ``last_time``, ``kinds``) are not hashed, but readers find and skip
  links by them: verification and the checkpointer check them against the records.
- **Without a WAL, the log is the fallback.** A Lambda's record whose store write fails after the probe
  (the operation may have acted) is kept in memory for the next invocation and logged once whole
  (``UNSTORED_EVENT``); ``ops.audit.ingest_unstored`` chains the ones the trail lacks.

Measured (``tests/audit/test_throughput.py``, 2-core box shared with other builds, moto as DynamoDB;
compare ratios, not absolutes; "before" is from before the compressed links and the KMIP templates):

    NullAuditSink.record                                   3-17 million events/s
    ChainedAuditSink.record, WAL, fsync per record         200-7,000 events/s (the disk's fsync rate)
    ... WAL handed to the OS per record, no fsync          8,200-124,000 events/s (audit_wal_fsync=False)
    ... written, not yet synced (the CPU cost)             before: 12,000-45,000 events/s; now 155,000
    record_from (KMIP template), to the OS once per 6      230,000 events/s (~4.3 us per record)
    drain to DynamoDB, links of up to 8,000 events         before: 2,700-4,500 events/s; now 230,000+
    per-tenant counter (ADD) + one put per event           42-227 events/s

One link put against moto (``Link.store``, client + moto CPU per event): 50 uncompressed events 22 +
50 us; 600 uncompressed 9.7 + 16.7 us; 600 compressed 2.3 + 2.5 us. In DynamoDB the counter design
would put two writes per event on one hot item (<= ~500 events/s per tenant before throttling and
conditional retries), while packed links need a few writes per second per writer.
The price on the hot path is the WAL's fsync: a server that answers each request only after its
record is fsync'd is bounded by the disk's fsync rate per in-flight request, which is why ``sync`` is a
group commit (callers share fsyncs; a batching server calls it once per batch of replies) and why a
deployment may choose ``audit_wal_fsync=False`` (records survive a killed process, as the SIGKILL test
proves; a machine crash can lose at most one ``flush_interval``). The KMIP-level figure (Get with the
real sink vs NullAuditSink) belongs to the KMIP benchmark.
"""

from openkcm.domain.audit.analytics import (
    iter_events,
    read_events,
    read_page,
    summarize_usage,
    usage_counts,
)
from openkcm.domain.audit.archive import ArchiveStore, LocalArchiveStore, S3ArchiveStore, archive_tenant
from openkcm.domain.audit.chain import GENESIS, Link, link_hash, new_writer_id
from openkcm.domain.audit.checkpoints import (
    ChainBroken,
    Checkpoint,
    CheckpointSigner,
    KmsCheckpointSigner,
    LocalCheckpointSigner,
    make_checkpoint,
)
from openkcm.domain.audit.events import (
    KINDS,
    RESULTS,
    SCHEMA_VERSION,
    AuditEvent,
    EventTemplate,
    acceptable_text,
    canonical,
    event_digest,
)
from openkcm.domain.audit.sink import MAX_PENDING, UNSTORED_EVENT, AuditSink, ChainedAuditSink, NullAuditSink
from openkcm.domain.audit.throttle import RefusalThrottle
from openkcm.domain.audit.verify import verify_tenant_chain

__all__ = [
    "GENESIS",
    "KINDS",
    "MAX_PENDING",
    "RESULTS",
    "SCHEMA_VERSION",
    "ArchiveStore",
    "AuditEvent",
    "AuditSink",
    "ChainBroken",
    "ChainedAuditSink",
    "UNSTORED_EVENT",
    "Checkpoint",
    "CheckpointSigner",
    "EventTemplate",
    "KmsCheckpointSigner",
    "Link",
    "LocalArchiveStore",
    "LocalCheckpointSigner",
    "NullAuditSink",
    "RefusalThrottle",
    "S3ArchiveStore",
    "acceptable_text",
    "archive_tenant",
    "canonical",
    "event_digest",
    "iter_events",
    "link_hash",
    "make_checkpoint",
    "new_writer_id",
    "read_events",
    "read_page",
    "summarize_usage",
    "usage_counts",
    "verify_tenant_chain",
]
