"""The alarm most of the stack needs: any datapoint above zero in one period is a problem."""

from __future__ import annotations

import math

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct


def alarm_on_any(
    scope: Construct,
    construct_id: str,
    metric: cloudwatch.IMetric,
    description: str,
    *,
    evaluation_periods: int = 1,
) -> cloudwatch.Alarm:
    """Alarm when ``metric`` is above 0 in any one of the last ``evaluation_periods`` periods; no data
    (nothing happened) is not breaching."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=0,
        evaluation_periods=evaluation_periods,
        # One breaching period of the window is enough (left out for one period: the same alarm).
        datapoints_to_alarm=1 if evaluation_periods > 1 else None,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        alarm_description=description,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )


def periods_covering(late_by: Duration, period: Duration) -> int:
    """How many periods an alarm must evaluate to still see a datapoint stamped ``late_by`` before it
    arrives: Lambda stamps Errors with the invocation's start, so a long invocation's error lands in a
    period a one-period alarm has already left behind. One more for the period it is stamped in."""
    return math.ceil(late_by.to_seconds() / period.to_seconds()) + 1


AT_OR_ABOVE = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD


def alarm_on_sustained(
    scope: Construct,
    construct_id: str,
    metric: cloudwatch.IMetric,
    *,
    threshold: float,
    description: str,
    comparison: cloudwatch.ComparisonOperator = AT_OR_ABOVE,
) -> cloudwatch.Alarm:
    """Alarm when ``metric`` breaches ``threshold`` in 2 of the last 3 periods (one bad period is noise);
    no data (no traffic) is not breaching."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=threshold,
        evaluation_periods=3,
        datapoints_to_alarm=2,
        comparison_operator=comparison,
        alarm_description=description,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
