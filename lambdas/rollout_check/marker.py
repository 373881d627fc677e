"""How a rollout check's synthetic request is told apart from a real applicant's (shared contract).

The check puts ``requestContext.rolloutCheck`` into the API Gateway proxy events it sends. API Gateway
builds ``requestContext`` itself, so no caller of the API can set the marker through the stage; only a
principal allowed to invoke the function directly can (the check's role, and administrators). The API
logs the deployment id under ``rollout_check`` on every line of such a request, its audit record
included, and leaves the request out of drift windows: a synthetic application is not an applicant.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Inside the proxy event's requestContext: {"deploymentId": ..., "lifecycleEventHookExecutionId": ...}.
CONTEXT_KEY = "rolloutCheck"
# The key of the API's log lines (audit records included) that carries the deployment id.
LOG_KEY = "rollout_check"
# Marked, but the deployment id unreadable: still a check, never an applicant.
UNKNOWN_DEPLOYMENT = "unknown"


def rollout_check_of(event: Mapping[str, Any]) -> str | None:
    """The CodeDeploy deployment id a synthetic check request belongs to, or None for a real request."""
    context = event.get("requestContext")
    if not isinstance(context, Mapping) or CONTEXT_KEY not in context:
        return None
    marker = context[CONTEXT_KEY]
    deployment = marker.get("deploymentId") if isinstance(marker, Mapping) else None
    return str(deployment) if isinstance(deployment, str) and deployment else UNKNOWN_DEPLOYMENT


def marker_for(deployment_id: str, lifecycle_event_hook_execution_id: str) -> dict[str, dict[str, str]]:
    """The requestContext entry the check adds to each of its requests."""
    return {
        CONTEXT_KEY: {
            "deploymentId": deployment_id,
            "lifecycleEventHookExecutionId": lifecycle_event_hook_execution_id,
        }
    }
