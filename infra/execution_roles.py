"""Execution roles of the stack's Lambda functions: each function writes its own log group and no other.

AWS's managed AWSLambdaBasicExecutionRole allows logs:CreateLogGroup, logs:CreateLogStream and
logs:PutLogEvents on every log group of the account. The audit trail is built from the scoring
functions' log lines (infra/audit_trail.py: a subscription filter ships each "scored" and "file
processed" line to the Object-Locked audit bucket), so with that policy any function of the stack (the
rollout check, the snapshot sweeper) could forge audit records in the API's log group. Instead, every
function the stack defines gets its own role with no managed policy, allowed to write the one log group
it logs to; the grants made later through the function (X-Ray for active tracing, S3, SQS, RDS, ...)
land in the same role.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import suppress

LAMBDA_SERVICE = "lambda.amazonaws.com"
# Where Lambda writes the logs of a function that names no log group: /aws/lambda/<function name>.
# No log group the stack creates is named there (CloudFormation names them after the stack).
LAMBDA_DEFAULT_LOG_GROUPS = "/aws/lambda/*"


def execution_role(scope: Construct, construct_id: str, *, log_group: logs.ILogGroup) -> iam.Role:
    """The role of the one function that logs to ``log_group``: it may write that log group only.

    ``grant_write`` allows logs:CreateLogStream and logs:PutLogEvents on the group's ARN as
    CloudFormation returns it, ``arn:<partition>:logs:<region>:<account>:log-group:<name>:*``: the group
    and its streams (``...:log-group:<name>:log-stream:<stream>``). CloudWatch Logs' access-control
    documentation asks for this trailing ``:*`` form in IAM policies for every action but the tagging
    ones. No logs:CreateLogGroup: CloudFormation creates the group before the function that names it,
    and Lambda sends the logs to an existing group as it is.
    """
    role = iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal(LAMBDA_SERVICE))
    log_group.grant_write(role)
    return role


def cdk_helper_role(scope: Construct, construct_id: str) -> iam.Role:
    """A role for one of CDK's own helper functions that accept a role but no log group setting.

    Such a helper logs to Lambda's default group, ``/aws/lambda/<function name>``, which exists only
    once the function first logs (so it needs logs:CreateLogGroup) and whose name CloudFormation makes
    at deploy time: the role may write log groups under ``/aws/lambda/`` only, never one the stack
    creates, so it cannot write into the scoring functions' log groups either.
    """
    role = iam.Role(scope, construct_id, assumed_by=iam.ServicePrincipal(LAMBDA_SERVICE))
    lambda_log_groups = Stack.of(scope).format_arn(
        service="logs",
        resource="log-group",
        resource_name=LAMBDA_DEFAULT_LOG_GROUPS,
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    role.add_to_policy(
        iam.PolicyStatement(
            actions=["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            resources=[lambda_log_groups],
        )
    )
    suppress(
        role,
        "AwsSolutions-IAM5",
        "A CDK helper function without a log group setting logs to /aws/lambda/<its name>, a group "
        "Lambda creates on its first log line under a name CloudFormation makes at deploy time: the "
        "role may create and write log groups (and, for CDK's log-retention helper, set their "
        "retention) under /aws/lambda/ only, none of which the stack creates (its functions' log "
        "groups, the audit trail's sources among them, are named after the stack).",
        findings=[
            "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
            + LAMBDA_DEFAULT_LOG_GROUPS
        ],
    )
    return role


def role_of(function: lambda_.IFunction) -> iam.IRole:
    """The execution role of one of the stack's functions. Grants made through the function land in
    this role's default policy, where cdk-nag reports their findings: acknowledge them on the role."""
    role = function.role
    if role is None:
        raise ValueError(f"{function.node.path} has no execution role")
    return role
