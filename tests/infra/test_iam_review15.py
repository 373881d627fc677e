"""Least privilege review: the snapshot-export role, the log-retention helper's role, the state machine's
KMS grant, and whether every cdk-nag acknowledgement still matches a finding.

An acknowledgement that matches no finding is not harmless: it is made ahead of time for a wildcard the
role no longer has, so a later grant that brings the wildcard back passes synthesis unreviewed.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.conftest import Resources, Synthesised, role_statements
from tests.infra.iam_replay import ACCOUNT, PARTITION, REGION, Names, RecordedCall, Stack, check

Statement = dict[str, Any]
PACKS = ("AwsSolutions::", "Serverless::", "NIST.800.53.R5::")
# What lives in the files this review may change (infra/data.py, training_pipeline.py, network.py,
# snapshot_sweeper.py, tool_functions.py, execution_roles.py): their acknowledgements must all be live.
REVIEWED_PATHS = ("Data/", "Training/", "Network/", "SnapshotSweeper/", "Serving/RolloutCheck/")
EXPORT_ID = "train-0b9e6f3c-4f0e-4c58-9d6a-2f1a3c7d9e10"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _logical_id(resources: Resources, kind: str, prefix: str) -> str:
    [found] = [name for name, r in resources.items() if r["Type"] == kind and name.startswith(prefix)]
    return found


def _role_trusting(resources: Resources, service: str) -> str:
    [found] = [
        name
        for name, r in resources.items()
        if r["Type"] == "AWS::IAM::Role"
        and any(
            s["Principal"].get("Service") == service
            for s in r["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        )
    ]
    return found


def _start_export_parameters(resources: Resources) -> dict[str, Any]:
    """The Parameters of the state machine's StartExportTask state (tokens replaced by placeholders)."""
    machine = next(r for r in resources.values() if r["Type"] == "AWS::StepFunctions::StateMachine")
    parts = machine["Properties"]["DefinitionString"]["Fn::Join"][1]
    states = json.loads("".join(p if isinstance(p, str) else "token" for p in parts))["States"]
    [parameters] = [
        state["Parameters"]
        for state in states.values()
        if state.get("Resource", "").endswith(":rds:startExportTask")
    ]
    found: dict[str, Any] = parameters
    return found


# ---------------------------------------------------------------------------------------------------
# The role RDS assumes to write a snapshot export
# ---------------------------------------------------------------------------------------------------


def _export_call(operation: str, key: str) -> RecordedCall:
    return RecordedCall("RDS snapshot export", "s3", operation, {"Bucket": "exports", "Key": key}, 200)


def test_given_the_export_role_when_rds_writes_reads_or_deletes_then_only_the_export_prefix_is_allowed(
    synthesised: Synthesised, resources: Resources
) -> None:
    # Given the role StartExportTask passes to RDS, and the prefix the state machine exports under
    stack = Stack(synthesised.template_json)
    role = _role_trusting(resources, "export.rds.amazonaws.com")
    prefix = _start_export_parameters(resources)["S3Prefix"]
    names = Names(buckets={"exports": _logical_id(resources, "AWS::S3::Bucket", "DataExportBucket")})
    inside = f"{prefix}/{EXPORT_ID}/loans/loans.applications/1/part-00000.gz.parquet"
    # When RDS writes, reads back and cleans up the export's own files: allowed (with the bucket's key)
    own = [_export_call(op, inside) for op in ("PutObject", "GetObject", "DeleteObject")]
    assert all(decision.allowed for decision in check(stack, role, own, names))
    # When the same role is used against the loader's input files (an export started with another
    # S3Prefix): every object action is denied (the key's use alone writes nothing)
    loader_file = "datasets/credit_risk/applications.csv"
    elsewhere = [_export_call(op, loader_file) for op in ("PutObject", "GetObject", "DeleteObject")]
    decisions = check(stack, role, elsewhere, names)
    s3_allowed = [d.requirement.action for d in decisions if d.allowed and d.requirement.action[:3] == "s3:"]
    assert s3_allowed == []
    # And a key that only starts like the prefix ("exports-old/...") is outside it too
    lookalike = [_export_call("PutObject", f"{prefix}-old/{EXPORT_ID}/x.parquet")]
    assert not check(stack, role, lookalike, names)[0].allowed


def test_given_the_export_role_then_bucket_level_actions_are_the_documented_two_and_objects_the_prefix(
    resources: Resources,
) -> None:
    role = _role_trusting(resources, "export.rds.amazonaws.com")
    bucket = _logical_id(resources, "AWS::S3::Bucket", "DataExportBucket")
    prefix = _start_export_parameters(resources)["S3Prefix"]
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    s3 = [s for s in role_statements(resources, role) if str(_as_list(s["Action"])[0]).startswith("s3:")]
    # Then the bucket ARN carries only listing and the location lookup (RDS's documented bucket actions)
    on_bucket = sorted(a for s in s3 if bucket_arn in _as_list(s["Resource"]) for a in _as_list(s["Action"]))
    assert on_bucket == ["s3:GetBucketLocation", "s3:ListBucket"]
    # And every object grant names <bucket>/<the state machine's S3Prefix>/*, nothing wider
    object_resources = [r for s in s3 for r in _as_list(s["Resource"]) if r != bucket_arn]
    assert object_resources == [{"Fn::Join": ["", [bucket_arn, f"/{prefix}/*"]]}]


# ---------------------------------------------------------------------------------------------------
# CDK's log-retention helper (RDS log exports)
# ---------------------------------------------------------------------------------------------------

_PSEUDO = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT}


def _text(value: Any) -> str:
    """A policy value as text: pseudo parameters resolved, other Refs as the logical id."""
    if isinstance(value, str):
        return value
    if "Ref" in value:
        return _PSEUDO.get(str(value["Ref"]), str(value["Ref"]))
    if "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_text(part) for part in parts)
    if "Fn::GetAtt" in value:
        return "{}.{}".format(*value["Fn::GetAtt"])
    raise AssertionError(f"unexpected policy value {value}")


def _matches(pattern: str, value: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), value) is not None


def _allowed(statements: list[Statement], action: str, resource: str) -> bool:
    """Allow and Deny (Resource or NotResource) of identity statements without conditions."""

    def applies(statement: Statement) -> bool:
        if not any(_matches(a, action) for a in _as_list(statement["Action"])):
            return False
        assert "Condition" not in statement, statement
        if "NotResource" in statement:
            return not any(_matches(_text(r), resource) for r in _as_list(statement["NotResource"]))
        return any(_matches(_text(r), resource) for r in _as_list(statement["Resource"]))

    matching = [s for s in statements if applies(s)]
    return any(s["Effect"] == "Allow" for s in matching) and not any(s["Effect"] == "Deny" for s in matching)


def _log_group(name: str) -> str:
    return f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"


@pytest.mark.parametrize("action", ["logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy"])
def test_given_the_log_retention_helper_then_it_sets_retention_of_the_database_exports_and_its_own_logs_only(
    resources: Resources, action: str
) -> None:
    role = _logical_id(resources, "AWS::IAM::Role", "DataLogRetentionRole")
    database = _logical_id(resources, "AWS::RDS::DBInstance", "DataDatabase")
    statements = role_statements(resources, role)
    # Then the database's exported groups and the helper's own /aws/lambda/ group are allowed
    assert _allowed(statements, action, _log_group(f"/aws/rds/instance/{database}/audit"))
    assert _allowed(statements, action, _log_group("/aws/lambda/LoanScoring-dev-LogRetentionaae0aa3c5b4d"))
    # And not the stack's own log groups (the scoring API's is a source of the audit trail), nor
    # another database's, nor any other group of the account (CloudTrail's, say)
    api_logs = resources[_logical_id(resources, "AWS::Logs::LogGroup", "ServingScoringFunctionLogs")]
    assert api_logs["Properties"].get("LogGroupName") is None  # named by CloudFormation after the stack
    for group in ("LoanScoring-dev-ServingScoringFunctionLogsCA5EB75F-x1", "/aws/rds/instance/other/audit"):
        assert not _allowed(statements, action, _log_group(group)), group
    assert not _allowed(statements, action, _log_group("aws-cloudtrail-logs-123456789012-abcd"))


# ---------------------------------------------------------------------------------------------------
# The state machine's grant on the data key
# ---------------------------------------------------------------------------------------------------


def test_given_the_state_machine_then_it_creates_grants_on_the_data_key_only_for_aws_services(
    resources: Resources,
) -> None:
    role = _role_trusting(resources, "states.amazonaws.com")
    data_key = _logical_id(resources, "AWS::KMS::Key", "DataDataKey")
    grants = [
        s
        for s in role_statements(resources, role)
        if "kms:CreateGrant" in _as_list(s["Action"]) and s["Effect"] == "Allow"
    ]
    # Then CreateGrant (which could hand Decrypt on the key holding every applicant's data to any
    # principal) is allowed only when RDS creates the grant for the export it runs
    assert [s["Resource"] for s in grants] == [{"Fn::GetAtt": [data_key, "Arn"]}]
    assert [s.get("Condition") for s in grants] == [{"Bool": {"kms:GrantIsForAWSResource": "true"}}]


def test_given_the_enhanced_monitoring_role_then_its_acknowledgement_states_the_managed_policys_scope(
    synthesised: Synthesised, resources: Resources
) -> None:
    # Given AWS's AmazonRDSEnhancedMonitoringRole: CreateLogGroup, PutRetentionPolicy and log writes on
    # arn:aws:logs:*:*:log-group:RDS* (any group so named), not one RDSOSMetrics group
    finding = "AwsSolutions::AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
    [reason] = [
        text
        for path, entries in _metadata(synthesised).items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for rule, text in entry["data"].items()
        if rule == finding + "AmazonRDSEnhancedMonitoringRole]"
    ]
    # Then the reason says what the policy allows
    assert "RDS*" in reason
    assert "only writes the RDSOSMetrics log group" not in reason
    # And it holds for this stack: none of its log groups is named RDS...
    names = [
        r["Properties"].get("LogGroupName") for r in resources.values() if r["Type"] == "AWS::Logs::LogGroup"
    ]
    assert not [name for name in names if isinstance(name, str) and name.startswith("RDS")]


# ---------------------------------------------------------------------------------------------------
# Acknowledgements that no finding uses
# ---------------------------------------------------------------------------------------------------


def _metadata(synthesised: Synthesised) -> dict[str, list[dict[str, Any]]]:
    """The cloud assembly's construct metadata (acknowledgements among it), by construct path."""
    stack_name = synthesised.template_path.name.removesuffix(".template.json")
    path = synthesised.template_path.with_name(f"{stack_name}.metadata.json")
    found: dict[str, list[dict[str, Any]]] = json.loads(path.read_text())
    return found


def _acknowledgements(synthesised: Synthesised) -> set[tuple[str, str]]:
    """(construct path, acknowledged id) of every cdk-nag acknowledgement the app made."""
    return {
        (path.lstrip("/"), acknowledged)
        for path, entries in _metadata(synthesised).items()
        for entry in entries
        if entry["type"] == "aws:cdk:acknowledged-rules"
        for acknowledged in entry["data"]
        if acknowledged.startswith(PACKS)
    }


def _unused(synthesised: Synthesised) -> set[tuple[str, str]]:
    used = {
        (violation["acknowledgedAt"], violation["acknowledgedId"])
        for report in synthesised.validation_report["pluginReports"]
        for violation in report.get("suppressedViolations", [])
    }
    acknowledgements = _acknowledgements(synthesised)
    assert len(acknowledgements) > 100  # the metadata really holds them
    return acknowledgements - used


def test_given_the_reviewed_constructs_then_every_acknowledgement_matches_a_finding(
    synthesised: Synthesised, synthesised_with_options: Synthesised
) -> None:
    for variant in (synthesised, synthesised_with_options):
        stale = {
            (path, rule)
            for path, rule in _unused(variant)
            if path.split("/", 1)[1].startswith(REVIEWED_PATHS)
        }
        assert stale == set()


def test_given_the_app_then_every_acknowledgement_matches_a_finding(synthesised: Synthesised) -> None:
    assert _unused(synthesised) == set()
