"""Monitoring review: alarms built with metric math still see a sparse metric.

CloudWatch metric math leaves out a period in which any operand has no datapoint, and the metrics these
alarms add are sparse: a Lambda publishes no ``Throttles`` while it is not invoked, Step Functions no
``ExecutionsTimedOut`` while nothing timed out. An unfilled sum then has no value exactly when one of
its terms is the problem, and the alarm (missing data = not breaching) stays OK.
"""

from __future__ import annotations

import re
from typing import Any

from tests.infra.conftest import Resources


def _alarm_expressions(resources: Resources) -> dict[str, tuple[str, list[str]]]:
    """Per alarm built on metric math: its returned expression and the ids of the metrics it reads."""
    found: dict[str, tuple[str, list[str]]] = {}
    for name, resource in resources.items():
        if resource["Type"] != "AWS::CloudWatch::Alarm" or "Metrics" not in resource["Properties"]:
            continue
        queries: list[dict[str, Any]] = resource["Properties"]["Metrics"]
        (returned,) = [q["Expression"] for q in queries if q.get("ReturnData", True) and "Expression" in q]
        found[name] = (returned, [q["Id"] for q in queries if "MetricStat" in q])
    return found


def test_given_alarms_adding_sparse_metrics_when_synthesised_then_every_term_is_filled_with_zero(
    resources: Resources,
) -> None:
    # Given every alarm whose expression adds metrics (throttles of both functions, failed/timed-out/
    # aborted training runs, drifted files and API windows)
    sums = {name: found for name, found in _alarm_expressions(resources).items() if "+" in found[0]}
    watched = ("ObservabilityLambdaThrottles", "ObservabilityTrainingFailures", "ObservabilityScoringDrift")
    assert all(any(name.startswith(prefix) for name in sums) for prefix in watched)
    # Then each metric enters the sum as FILL(<id>, 0), so one term without data does not blank the sum
    unfilled = {
        name: [i for i in ids if not re.search(rf"FILL\(\s*{i}\s*,\s*0\s*\)", expression)]
        for name, (expression, ids) in sums.items()
    }
    assert {name: ids for name, ids in unfilled.items() if ids} == {}
