"""SDK loggers never emit DEBUG records (request bodies, credential ids), even with a DEBUG root."""

import logging

import boto3

import openkcm  # noqa: F401  (importing the package applies the cap)


def test_sdk_debug_is_capped_even_with_a_debug_root(aws_endpoint, caplog):
    with caplog.at_level(logging.DEBUG):
        boto3.client("kms").list_keys()
    assert not [r for r in caplog.records if r.name.startswith(("botocore", "boto3", "urllib3")) and r.levelno < logging.INFO]
    assert logging.getLogger("botocore").getEffectiveLevel() >= logging.INFO
