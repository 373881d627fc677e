"""The alarm most of the stack needs: any datapoint above zero in one period is a problem."""

from __future__ import annotations

from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct


def alarm_on_any(
    scope: Construct, construct_id: str, metric: cloudwatch.IMetric, description: str
) -> cloudwatch.Alarm:
    """Alarm when ``metric`` is above 0 in one period; no data (nothing happened) is not breaching."""
    return cloudwatch.Alarm(
        scope,
        construct_id,
        metric=metric,
        threshold=0,
        evaluation_periods=1,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        alarm_description=description,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
