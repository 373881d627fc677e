"""Lambda entry point of the snapshot sweeper (``lambdas.snapshot_sweeper.handler.handler``).

EventBridge invokes it once a day; the event carries nothing the sweep needs. boto3 comes with Lambda's
Python runtime.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from functools import cache
from typing import Any, cast

import boto3
from botocore.config import Config

from lambdas.snapshot_sweeper.sweep import RdsClient, run_sweep


@cache
def _rds() -> RdsClient:
    """Made on first use and kept for the execution environment's later invocations. Throttling and
    transient errors are retried by the client (standard mode); what still fails fails the sweep."""
    config = Config(connect_timeout=5, read_timeout=20, retries={"mode": "standard", "max_attempts": 5})
    return cast(RdsClient, boto3.client("rds", config=config))


def handler(event: Any, context: Any) -> dict[str, Any]:
    return run_sweep(os.environ, _rds(), datetime.now(UTC)).as_dict()
