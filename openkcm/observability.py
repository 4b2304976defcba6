"""Logging rules every OpenKCM process shares.

The AWS SDK logs request bodies and credential ids at DEBUG, which for OpenKCM means wrapped blobs and
keystore access key ids: those loggers are capped at INFO whatever the root level is, so turning on
DEBUG for our own modules never leaks them.
"""

from __future__ import annotations

import logging

SDK_LOGGERS = ("botocore", "boto3", "urllib3", "azure", "google", "s3transfer")


def cap_sdk_loggers(level: int = logging.INFO) -> None:
    for name in SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET or logger.level < level:
            logger.setLevel(level)
