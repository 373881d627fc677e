"""Powertools Logger, Metrics and Tracer: created once here, imported by the handler modules."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger, Metrics, Tracer

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "loan-scoring-api")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LoanScoring")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = Tracer(service=SERVICE)
