"""CMK API Lambda: Powertools logging, tracing and metrics around one call into the API resolver.

Behind an API Gateway HTTP API whose JWT authorizer has verified the bearer token already; the
resolver reads only the verified claims from the event. Configuration is a typed model checked at cold
start, so a misconfigured function fails on its first invocation with a clear message.
"""

from __future__ import annotations

import warnings
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from openkcm.api.app import resolve


class HandlerConfig(BaseSettings):
    """Environment of the function (besides the ``OPENKCM_*`` settings every process reads)."""

    model_config = SettingsConfigDict(extra="ignore")

    powertools_service_name: str = Field("openkcm-cmk-api", min_length=1)
    powertools_metrics_namespace: str = Field("OpenKCM", min_length=1)
    openkcm_table_prefix: str = Field("openkcm", pattern=r"^[A-Za-z0-9_.-]{1,200}$")
    # The local adapter disables metrics (no EMF lines on the console); then none are even collected.
    powertools_metrics_disabled: bool = False


config = HandlerConfig()
logger = Logger(service=config.powertools_service_name)
tracer = Tracer(service=config.powertools_service_name)
metrics = Metrics(namespace=config.powertools_metrics_namespace, service=config.powertools_service_name)
if config.powertools_metrics_disabled:
    warnings.filterwarnings("ignore", message="No application metrics to publish")


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_HTTP, log_event=False)
@tracer.capture_lambda_handler(capture_response=False)
@metrics.log_metrics(raise_on_empty_metrics=False)
def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = resolve(event, context)
    if not config.powertools_metrics_disabled:
        status = int(response.get("statusCode", 500))
        metrics.add_metric(name="Requests", unit=MetricUnit.Count, value=1)
        if status >= 500:
            metrics.add_metric(name="ServerErrors", unit=MetricUnit.Count, value=1)
        elif status >= 400:
            metrics.add_metric(name="ClientErrors", unit=MetricUnit.Count, value=1)
    return response
