"""The log messages that make the audit trail, shared by the handlers that write them and by the
infrastructure that ships exactly those lines to the audit bucket (infra/audit_trail.py).

Plain constants on purpose: the CDK app imports this module at synth time without the Lambda packages.
"""

from __future__ import annotations

# API: one line per request with every decision it made (application id, probability, threshold,
# decision, reasons), plus the caller, the request id (correlation_id) and the model version.
API_DECISION = "scored"
API_DECISIONS = "scored batch"
# Batch: one line per file with the input object (key, ETag, version), outputs, model version and counts.
BATCH_FILE = "file processed"

AUDIT_MESSAGES: tuple[str, ...] = (API_DECISION, API_DECISIONS, BATCH_FILE)
