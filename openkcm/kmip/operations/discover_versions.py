"""Discover Versions (KMIP 1.1+, spec 4.26): the server answers with the protocol versions it supports
that the client listed, in the server's order of preference (highest first); with none listed, all."""

from __future__ import annotations

from openkcm.kmip.context import BatchState, Outcome, RequestContext
from openkcm.kmip.errors import invalid
from openkcm.protocol import messages, ttlv
from openkcm.protocol.tags import Tag
from openkcm.protocol.ttlv import TTLV


def handle(ctx: RequestContext, payload: TTLV, batch: BatchState) -> Outcome:
    wanted = set()
    for node in payload.all(Tag.PROTOCOL_VERSION):
        major, minor = node.get(Tag.PROTOCOL_VERSION_MAJOR), node.get(Tag.PROTOCOL_VERSION_MINOR)
        if major is None or minor is None or major.type != ttlv.INTEGER or minor.type != ttlv.INTEGER:
            raise invalid("Protocol Version needs major and minor integers")
        wanted.add((major.value, minor.value))
    versions = [v for v in messages.SUPPORTED_VERSIONS if not wanted or v in wanted]
    return Outcome([messages.protocol_version(v) for v in versions])
