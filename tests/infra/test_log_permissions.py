"""Each Lambda function of the stack may write its own log group and no other.

The audit trail is built from the scoring functions' log lines (a subscription filter on the API's and
the batch function's log groups ships them to the Object-Locked audit bucket): a function that can write
into the API's log group can forge audit records there. AWS's managed AWSLambdaBasicExecutionRole allows
exactly that (logs:CreateLogGroup, CreateLogStream and PutLogEvents on every log group), so the stack's
functions have their own roles instead (infra/execution_roles.py).

The roles are read from the synthesised template with the permission replay's template reader
(tests/infra/iam_replay.py): inline policies, attached policies and the AWS-managed policies it knows.
Log groups are named by their logical ids, as the replay names every stack resource.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from infra.rollout import ROLLOUT_CHECK_HANDLER
from infra.scoring_functions import service_name
from infra.snapshot_sweeper import SWEEPER_HANDLER
from tests.infra.conftest import Synthesised
from tests.infra.iam_replay import ACCOUNT, REGION, SourcedStatement, Stack, as_list

BASIC_EXECUTION_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
# The functions the stack defines itself, each logging to its own encrypted log group.
OWN_HANDLERS = {
    "lambdas.api.handler.handler",
    "lambdas.batch.handler.handler",
    ROLLOUT_CHECK_HANDLER,
    SWEEPER_HANDLER,
}
# CDK's helper functions that keep AWS's managed policy, by the logical id CDK gives them: the
# bucket-notifications handler attaches it to any role it is given (infra/stack.py), the VPC's
# default-security-group provider hard-codes it in a role of its own (infra/network.py). Both run CDK's
# code during deployments only. A third function with the managed policy fails these tests.
KEEP_MANAGED_POLICY = ("BucketNotificationsHandler", "CustomVpcRestrictDefaultSGCustomResourceProvider")
# CDK's log-retention helper takes a role: it may write Lambda's default log groups only.
LOG_RETENTION_HELPER = "LogRetention"
LAMBDA_DEFAULT_LOG_GROUPS = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/*"
WRITE_ACTIONS = ("logs:CreateLogStream", "logs:PutLogEvents")
LOG_ACTIONS = (*WRITE_ACTIONS, "logs:CreateLogGroup")
# A stream name as Lambda makes them in a custom log group: date, function, version, environment.
STREAM = "2025/01/31/ServingScoringFunction[$LATEST]0123456789abcdef0123456789abcdef"


@dataclass(frozen=True)
class Function:
    logical_id: str
    role: str
    log_group: str | None  # logical id of the log group the function names; None: Lambda's default group


def _functions(stack: Stack) -> list[Function]:
    found = []
    for logical_id, resource in stack.of_type("AWS::Lambda::Function").items():
        group = resource["Properties"].get("LoggingConfig", {}).get("LogGroup")
        if group is not None:
            assert stack.type_of(group["Ref"]) == "AWS::Logs::LogGroup", (logical_id, group)
        found.append(Function(logical_id, stack.role_of(logical_id), group["Ref"] if group else None))
    return found


def _own_functions(stack: Stack) -> list[Function]:
    own = [f for f in _functions(stack) if f.log_group is not None]
    handlers = {stack.properties(f.logical_id)["Handler"] for f in own}
    assert handlers == OWN_HANDLERS, "the stack's own functions are the ones with their own log group"
    return own


def _function_of(stack: Stack, service: str) -> Function:
    logical_id = stack.function(service_name(service))
    (found,) = [f for f in _functions(stack) if f.logical_id == logical_id]
    return found


def _keeps_managed_policy(function: Function) -> bool:
    return function.logical_id.startswith(KEEP_MANAGED_POLICY)


def _managed_policies(stack: Stack, role: str) -> list[str]:
    return [stack.resolve(arn) for arn in stack.properties(role).get("ManagedPolicyArns", [])]


def _matches(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    """IAM matching: ``*`` any run of characters, ``?`` one character."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL | (re.IGNORECASE if ignore_case else 0)) is not None


def _names_action(statement: dict[str, Any], actions: tuple[str, ...]) -> bool:
    assert "NotAction" not in statement, statement
    return any(
        _matches(pattern, action, ignore_case=True)
        for pattern in as_list(statement["Action"])
        for action in actions
    )


def _log_statements(stack: Stack, role: str) -> Iterator[SourcedStatement]:
    """The role's statements on any CloudWatch Logs write action (managed policies included)."""
    for sourced in stack.identity_statements(role):
        statement = dict(sourced.statement)
        if _names_action(statement, LOG_ACTIONS):
            # Nothing here is conditional: a condition would need evaluating, not ignoring.
            assert "Condition" not in statement, sourced
            assert "NotResource" not in statement, sourced
            yield sourced


def _group_arns(group: str) -> list[str]:
    """What CloudWatch Logs may authorise a write into ``group`` against: a stream, the group's ``:*``
    form that policies name, the bare group ARN."""
    arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{group}"
    return [f"{arn}:log-stream:{STREAM}", f"{arn}:*", arn]


def _can_write(stack: Stack, role: str, group: str) -> bool:
    """Whether the role may create a stream in, or put events into, the log group named ``group``."""
    allowed = denied = False
    for sourced in _log_statements(stack, role):
        statement = sourced.statement
        if not _names_action(dict(statement), WRITE_ACTIONS):
            continue
        resources = [stack.resolve(r) for r in as_list(statement["Resource"])]
        if any(_matches(pattern, arn) for pattern in resources for arn in _group_arns(group)):
            allowed |= statement["Effect"] == "Allow"
            denied |= statement["Effect"] == "Deny"
    return allowed and not denied


def _writers(stack: Stack, group: str) -> set[str]:
    """The functions whose roles may write ``group``, CDK's helpers with the managed policy left out."""
    return {
        f.logical_id
        for f in _functions(stack)
        if not _keeps_managed_policy(f) and _can_write(stack, f.role, group)
    }


@pytest.fixture(params=["synthesised", "synthesised_with_options"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The default app and the app with every option (Cognito, NAT gateway, SnapStart, no WAF, ...)."""
    synthesised: Synthesised = request.getfixturevalue(request.param)
    return Stack(synthesised.template_json)


@pytest.fixture(scope="module")
def stack(synthesised: Synthesised) -> Stack:
    return Stack(synthesised.template_json)


# ---- the managed policy ----------------------------------------------------------------------------


def test_given_the_stacks_functions_then_none_but_two_cdk_helpers_has_the_managed_basic_execution_policy(
    any_stack: Stack,
) -> None:
    with_managed_policy = {
        f.logical_id
        for f in _functions(any_stack)
        if BASIC_EXECUTION_POLICY in _managed_policies(any_stack, f.role)
    }
    # Then none of the stack's own functions has it
    own = {f.logical_id for f in _own_functions(any_stack)}
    assert not own & with_managed_policy
    # And only the two CDK helpers that cannot take a scoped role keep it
    assert len(with_managed_policy) == len(KEEP_MANAGED_POLICY)
    assert all(logical_id.startswith(KEEP_MANAGED_POLICY) for logical_id in with_managed_policy)


def test_given_the_stacks_own_functions_then_their_roles_attach_no_managed_policy_at_all(
    any_stack: Stack,
) -> None:
    for function in _own_functions(any_stack):
        assert _managed_policies(any_stack, function.role) == [], function.logical_id


# ---- each function's own log group -----------------------------------------------------------------


def test_given_each_own_function_then_every_log_write_statement_of_its_role_names_its_own_group_only(
    any_stack: Stack,
) -> None:
    for function in _own_functions(any_stack):
        assert function.log_group is not None
        statements = list(_log_statements(any_stack, function.role))
        assert statements, f"{function.logical_id} may not write its logs"
        for sourced in statements:
            statement = sourced.statement
            resources = [any_stack.resolve(r) for r in as_list(statement["Resource"])]
            # Then it names the function's own group (":*": the group and its streams), nothing else
            assert resources == [any_stack.arn(function.log_group)], (function.logical_id, sourced)
            # And it cannot create log groups: CloudFormation creates the function's before the function
            assert not _names_action(dict(statement), ("logs:CreateLogGroup",)), sourced
        # And the role can create its streams and put its events there
        assert _can_write(any_stack, function.role, function.log_group), function.logical_id


def test_given_cdks_log_retention_helper_then_its_role_writes_lambdas_default_log_groups_only(
    stack: Stack,
) -> None:
    (helper,) = [f for f in _functions(stack) if f.logical_id.startswith(LOG_RETENTION_HELPER)]
    assert helper.log_group is None  # CDK gives it no log group setting: it logs to /aws/lambda/<name>
    assert _managed_policies(stack, helper.role) == []
    statements = list(_log_statements(stack, helper.role))
    writes = [s for s in statements if _names_action(dict(s.statement), WRITE_ACTIONS)]
    resources = {stack.resolve(r) for s in writes for r in as_list(s.statement["Resource"])}
    assert resources == {LAMBDA_DEFAULT_LOG_GROUPS}
    assert _can_write(stack, helper.role, "/aws/lambda/LoanScoring-dev-LogRetentionaae0aa3c5b4d4f87b02-Ab12")
    # Changed by the deploy review (tests/infra/test_deploy_review.py). This test required every log
    # statement, logs:CreateLogGroup included, to name /aws/lambda/* only. But CDK's handler also calls
    # CreateLogGroup on each group whose retention it sets, the database's exported groups
    # (/aws/rds/instance/<id>/<log>), and fails on a refusal: with that role the first deploy failed. So one
    # more statement is expected: CreateLogGroup alone, on that one database's groups (read as the template
    # writes it, since the replay cannot name an RDS instance); writes stay on /aws/lambda/* as above.
    (database,) = stack.of_type("AWS::RDS::DBInstance")
    creates = [s.statement for s in statements if s not in writes]
    assert [dict(s) for s in creates] == [
        {
            "Action": "logs:CreateLogGroup",
            "Effect": "Allow",
            "Resource": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":logs:",
                        {"Ref": "AWS::Region"},
                        ":",
                        {"Ref": "AWS::AccountId"},
                        ":log-group:/aws/rds/instance/",
                        {"Ref": database},
                        "/*",
                    ],
                ]
            },
        }
    ]


# ---- forging audit records -------------------------------------------------------------------------


@pytest.mark.parametrize("service", ["api", "batch"])
def test_given_a_scoring_functions_log_group_then_no_other_functions_role_can_write_audit_records_there(
    any_stack: Stack, service: str
) -> None:
    # Given the log group the audit trail reads the scoring function's records from
    scoring = _function_of(any_stack, service)
    assert scoring.log_group is not None
    # Then only that function's role can write into it: not the rollout check's, the sweeper's, the
    # other scoring function's or CDK's log-retention helper's (the two CDK helpers that keep AWS's
    # managed policy are the documented exception, see KEEP_MANAGED_POLICY)
    assert _writers(any_stack, scoring.log_group) == {scoring.logical_id}


def test_given_every_log_group_of_the_stack_then_only_the_function_that_logs_there_can_write_it(
    any_stack: Stack,
) -> None:
    owners = {f.log_group: f.logical_id for f in _functions(any_stack) if f.log_group is not None}
    for group in any_stack.of_type("AWS::Logs::LogGroup"):
        # Access logs, flow logs, the state machine's, the audit stream's errors: no function at all
        expected = {owners[group]} if group in owners else set()
        assert _writers(any_stack, group) == expected, group


# ---- the checks can fail ---------------------------------------------------------------------------


def _with_handler(stack: Stack, handler: str) -> Function:
    (found,) = [f for f in _functions(stack) if stack.properties(f.logical_id)["Handler"] == handler]
    return found


def test_given_the_sweeper_with_the_managed_policy_back_then_the_checks_see_it_could_forge_api_records(
    synthesised: Synthesised,
) -> None:
    template = copy.deepcopy(synthesised.template_json)
    stack = Stack(template)
    sweeper, api = _with_handler(stack, SWEEPER_HANDLER), _function_of(stack, "api")
    assert api.log_group is not None
    assert not _can_write(stack, sweeper.role, api.log_group)
    # When the sweeper's role gets AWS's managed policy back, as CDK's default role has it
    template["Resources"][sweeper.role]["Properties"]["ManagedPolicyArns"] = [
        {
            "Fn::Join": [
                "",
                [
                    "arn:",
                    {"Ref": "AWS::Partition"},
                    ":iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
                ],
            ]
        }
    ]
    # Then it could write the API's audit records, and the checks say so
    assert BASIC_EXECUTION_POLICY in _managed_policies(stack, sweeper.role)
    assert _writers(stack, api.log_group) == {api.logical_id, sweeper.logical_id}


def test_given_the_rollout_checks_log_grant_widened_to_every_group_then_the_checks_see_it(
    synthesised: Synthesised,
) -> None:
    template = copy.deepcopy(synthesised.template_json)
    stack = Stack(template)
    check, api = _with_handler(stack, ROLLOUT_CHECK_HANDLER), _function_of(stack, "api")
    assert api.log_group is not None
    assert not _can_write(stack, check.role, api.log_group)
    # When its logs statement names every log group (the replay's statements are the template's own)
    (sourced,) = _log_statements(stack, check.role)
    assert isinstance(sourced.statement, dict)
    sourced.statement["Resource"] = "*"
    # Then it could write the API's log group, and the checks say so
    assert _writers(stack, api.log_group) == {api.logical_id, check.logical_id}
