"""The log messages that make the audit trail, shared by the handlers that write them and by the
infrastructure that ships exactly those lines to the audit bucket (infra/audit_trail.py), and the
logging settings under which those lines would never reach it.

Standard library only on purpose: the CDK app imports this module at synth time without the Lambda
packages.
"""

from __future__ import annotations

from collections.abc import Mapping

# API: one line per request with every decision it made (application id, probability, threshold,
# decision, reasons and their texts), plus the caller, the request id (correlation_id) and the model version.
API_DECISION = "scored"
API_DECISIONS = "scored batch"
# API: a request whose decisions were recorded above but whose answer was a fault (500): the caller
# never received them. Same request id (correlation_id) as the decisions' line.
API_NOT_DELIVERED = "decisions not delivered"
# Batch: one line per file with the input object (key, ETag, version), outputs, model version and counts.
BATCH_FILE = "file processed"

AUDIT_MESSAGES: tuple[str, ...] = (API_DECISION, API_DECISIONS, API_NOT_DELIVERED, BATCH_FILE)

# The audit lines are logged at INFO. Powertools' Logger takes its level from AWS_LAMBDA_LOG_LEVEL
# (which Lambda sets from the function's ApplicationLogLevel, by which Lambda itself also drops lines
# of a lower "level" under the JSON log format), else POWERTOOLS_LOG_LEVEL, else LOG_LEVEL, else INFO.
# Each one is checked on its own, whichever wins today: a level above INFO left in one would drop the
# trail once the variable in front of it is removed.
LOG_LEVEL_VARIABLES: dict[str, tuple[str, ...]] = {
    # Lambda's names. TRACE: the runtime sets the root logger to DEBUG, which Powertools defers to.
    "AWS_LAMBDA_LOG_LEVEL": ("TRACE", "DEBUG", "INFO"),
    # Python's names, upper-cased by Powertools. Not NOTSET: the logger would defer to the root logger,
    # left at WARNING when Lambda has no ApplicationLogLevel.
    "POWERTOOLS_LOG_LEVEL": ("DEBUG", "INFO"),
    "LOG_LEVEL": ("DEBUG", "INFO"),
}
# Powertools indents its JSON over many lines when this is true, and CloudWatch Logs stores each line
# of a function's output as its own event: no event would be a whole JSON line for the filter to match.
PRETTY_PRINT_VARIABLE = "POWERTOOLS_DEV"
# What Powertools' strtobool reads as true (after lower-casing).
_POWERTOOLS_TRUE = frozenset({"1", "y", "yes", "t", "true", "on"})


def audit_logging_problem(env: Mapping[str, str]) -> str | None:
    """Why the audit lines would not reach the trail under ``env`` (naming the variable and its value),
    or None. The functions refuse to start on it; a level at or below INFO (DEBUG, TRACE) is fine."""
    for name, allowed in LOG_LEVEL_VARIABLES.items():
        raw = env.get(name, "")
        if raw and raw.upper() not in allowed:
            return (
                f"{name} must be one of {', '.join(allowed)} (or unset), got {raw!r}: the audit trail is "
                "logged at INFO, and this level would drop it without a trace"
            )
    raw = env.get(PRETTY_PRINT_VARIABLE, "")
    if raw.lower() in _POWERTOOLS_TRUE:
        return (
            f"{PRETTY_PRINT_VARIABLE} must be false (or unset), got {raw!r}: Powertools would spread each "
            "log line over several, which CloudWatch Logs keeps as separate events, none of them the "
            "JSON line the audit trail's subscription filter matches"
        )
    return None
