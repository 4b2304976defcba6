"""Provisioning Lambdas (issue 6): ``webhook_handler`` behind API Gateway (HTTP API, payload 2.0) for
``POST /v1/marketplace/events``, and ``worker_handler`` fed by the SQS queue between them.

Thin on purpose: configuration, one call into :mod:`openkcm.ops.provisioning`, a response. Where work is
queued is configuration: ``OPENKCM_PROVISION_QUEUE_URL`` (SQS, AWS) or, when it is empty, the local
in-process queue that ``openkcm local up`` registers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from openkcm.errors import OpenKCMError
from openkcm.ops import provisioning
from openkcm.ops.runtime import Runtime, build_runtime

_RUNTIME: Runtime | None = None


def _runtime() -> Runtime:
    """The local stack's runtime when its queue is registered, else one built at cold start."""
    global _RUNTIME
    queue = provisioning.local_queue()
    if queue is not None:
        return queue.runtime
    if _RUNTIME is None:
        _RUNTIME = build_runtime()
    return _RUNTIME


def _response(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


def webhook_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    method = event.get("requestContext", {}).get("http", {}).get("method", "POST")
    if method != "POST":
        return _response(405, {"error": "method_not_allowed", "message": "use POST"})
    raw = event.get("body") or ""
    body = base64.b64decode(raw) if event.get("isBase64Encoded") else raw.encode()
    try:
        runtime = _runtime()
        queue_url = runtime.settings.provision_queue_url
        enqueue = provisioning.SqsEnqueue(queue_url) if queue_url else provisioning.local_queue()
        if enqueue is None:
            return _response(503, {"error": "unavailable", "message": "no provisioning queue is configured"})
        source_ip = event.get("requestContext", {}).get("http", {}).get("sourceIp", "")
        status, reply = provisioning.accept_webhook(
            runtime, event.get("headers") or {}, body, enqueue, client_address=source_ip
        )
    except OpenKCMError as exc:
        return _response(exc.http_status, exc.to_dict())
    return _response(status, reply)


def _record_handler(record: SQSRecord) -> None:
    provisioning.process_event(_runtime(), json.loads(record.body), context=_CONTEXT.get("context"))


_CONTEXT: dict[str, Any] = {}
_PROCESSOR = BatchProcessor(event_type=EventType.SQS)


def worker_handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    """SQS batch: a failed record is reported back (ReportBatchItemFailures) so SQS retries only it, with
    the queue's visibility timeout as backoff, and moves it to the dead-letter queue after maxReceiveCount."""
    _CONTEXT["context"] = context
    return process_partial_response(
        event=event, record_handler=_record_handler, processor=_PROCESSOR, context=context
    )
