"""Template assertions for each security property the issue names (one shared synthesis)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from infra.batch_scoring import BATCH_TIMEOUT, MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT
from infra.config import AppConfig
from tests.infra.conftest import OPTIONS, Resources, Synthesised


def _of_type(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in resources.items() if r["Type"] == kind}


def test_rds_is_private_isolated_encrypted_with_a_customer_key_and_tls(
    template: Template, resources: Resources
) -> None:
    # Given the database, then it is private, encrypted with our KMS key, backed up and IAM-auth enabled
    template.has_resource_properties(
        "AWS::RDS::DBInstance",
        {
            "PubliclyAccessible": False,
            "StorageEncrypted": True,
            "KmsKeyId": {"Fn::GetAtt": [Match.string_like_regexp("DataDataKey"), "Arn"]},
            "BackupRetentionPeriod": 7,
            "EnableIAMDatabaseAuthentication": True,
            "DeletionProtection": True,
        },
    )
    template.has_resource_properties(
        "AWS::RDS::DBParameterGroup", {"Parameters": Match.object_like({"require_secure_transport": "ON"})}
    )
    # And its subnet group uses only isolated subnets (no route to an internet or NAT gateway)
    subnet_group = next(iter(_of_type(resources, "AWS::RDS::DBSubnetGroup").values()))
    subnet_refs = [ref["Ref"] for ref in subnet_group["Properties"]["SubnetIds"]]
    assert subnet_refs
    assert all("isolated" in ref for ref in subnet_refs)
    routes = _of_type(resources, "AWS::EC2::Route")
    assert routes == {}, "isolated-only VPC must have no internet/NAT routes by default"
    template.resource_count_is("AWS::EC2::NatGateway", 0)
    template.resource_count_is("AWS::EC2::InternetGateway", 0)


def test_given_the_database_then_its_exported_logs_are_written_and_hold_no_applicant_data(
    resources: Resources,
) -> None:
    (database,) = _of_type(resources, "AWS::RDS::DBInstance").values()
    properties = database["Properties"]
    # Then audit (plugin), error and slow-query logs go to CloudWatch; "general" (every statement,
    # applicant values included) does not
    assert sorted(properties["EnableCloudwatchLogsExports"]) == ["audit", "error", "slowquery"]
    # And the slow-query log is switched on, written to files (what RDS exports), not to tables
    ((parameter_group_id, parameter_group),) = _of_type(resources, "AWS::RDS::DBParameterGroup").items()
    assert properties["DBParameterGroupName"] == {"Ref": parameter_group_id}
    values = parameter_group["Properties"]["Parameters"]
    assert values["slow_query_log"] == "1"
    assert values["log_output"] == "FILE"
    assert 0 < float(values["long_query_time"]) <= 10
    assert "general_log" not in values or values["general_log"] == "0"
    # And the MariaDB audit plugin records connections, DDL and DCL, on an engine that supports it
    ((option_group_id, option_group),) = _of_type(resources, "AWS::RDS::OptionGroup").items()
    assert properties["OptionGroupName"] == {"Ref": option_group_id}
    assert option_group["Properties"]["EngineName"] == "mariadb"
    assert properties["EngineVersion"].startswith(option_group["Properties"]["MajorEngineVersion"] + ".")
    assert option_group["Properties"]["MajorEngineVersion"] in ("10.6", "10.11", "11.4", "11.8")
    (plugin,) = option_group["Properties"]["OptionConfigurations"]
    assert plugin["OptionName"] == "MARIADB_AUDIT_PLUGIN"
    settings = {s["Name"]: s["Value"] for s in plugin["OptionSettings"]}
    assert {"CONNECT", "QUERY_DDL", "QUERY_DCL"} <= set(settings["SERVER_AUDIT_EVENTS"].split(","))
    assert "QUERY" not in settings["SERVER_AUDIT_EVENTS"].split(",")  # would log every statement


def test_given_the_database_is_kept_on_removal_then_so_is_its_secret(resources: Resources) -> None:
    (database,) = _of_type(resources, "AWS::RDS::DBInstance").values()
    (secret,) = _of_type(resources, "AWS::SecretsManager::Secret").values()
    assert database["DeletionPolicy"] == "Retain"  # dataRemovalPolicy=retain (cdk.json)
    assert secret["DeletionPolicy"] == database["DeletionPolicy"]
    assert secret["UpdateReplacePolicy"] == database["UpdateReplacePolicy"]


def test_given_snapshot_removal_then_the_database_is_snapshotted_and_its_secret_and_key_kept(
    synthesised_with_options: Synthesised,
) -> None:
    resources = synthesised_with_options.template_json["Resources"]
    (database,) = _of_type(resources, "AWS::RDS::DBInstance").values()
    (secret,) = _of_type(resources, "AWS::SecretsManager::Secret").values()
    assert database["DeletionPolicy"] == "Snapshot"
    # Secrets and keys cannot be snapshotted: kept, so the final snapshot can be restored and logged into
    assert secret["DeletionPolicy"] == "Retain"
    data_key = next(r for name, r in resources.items() if name.startswith("DataDataKey"))
    assert data_key["DeletionPolicy"] == "Retain"


def test_rds_secret_is_generated_and_rotated(template: Template) -> None:
    template.resource_count_is("AWS::SecretsManager::RotationSchedule", 1)
    template.has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": Match.object_like({"PasswordLength": Match.any_value()})},
    )


def test_every_bucket_is_private_encrypted_and_tls_only(resources: Resources) -> None:
    buckets = _of_type(resources, "AWS::S3::Bucket")
    policies = _of_type(resources, "AWS::S3::BucketPolicy")
    assert len(buckets) == 5  # access logs, export, artifacts, scoring, audit
    for name, bucket in buckets.items():
        properties = bucket["Properties"]
        assert properties["PublicAccessBlockConfiguration"] == {
            "BlockPublicAcls": True,
            "BlockPublicPolicy": True,
            "IgnorePublicAcls": True,
            "RestrictPublicBuckets": True,
        }, name
        encryption = properties["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]
        algorithm = encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"]
        assert properties["VersioningConfiguration"] == {"Status": "Enabled"}, name
        if "AccessLogs" in name:
            assert algorithm == "AES256"  # S3 log delivery cannot write to KMS buckets
        else:
            assert algorithm == "aws:kms", name
            assert "LoggingConfiguration" in properties, name
        policy = next(p for p in policies.values() if p["Properties"]["Bucket"] == {"Ref": name})
        denies_plain_http = [
            statement
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]
            if statement["Effect"] == "Deny"
            and statement.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}}
        ]
        assert denies_plain_http, f"{name} must deny requests without TLS"


def test_every_api_method_is_authorised_except_health(resources: Resources) -> None:
    methods = [
        m
        for m in _of_type(resources, "AWS::ApiGateway::Method").values()
        if m["Properties"]["HttpMethod"] != "OPTIONS"
    ]
    resource_paths = {
        name: r["Properties"]["PathPart"]
        for name, r in _of_type(resources, "AWS::ApiGateway::Resource").items()
    }
    open_paths = []
    for method in methods:
        path = resource_paths[method["Properties"]["ResourceId"]["Ref"]]
        if method["Properties"]["AuthorizationType"] == "NONE":
            open_paths.append(path)
        else:
            assert method["Properties"]["AuthorizationType"] == "AWS_IAM"
    assert len(methods) == 5
    assert open_paths == ["health"]


def test_api_stage_is_throttled_traced_and_access_logged(template: Template) -> None:
    template.has_resource_properties(
        "AWS::ApiGateway::Stage",
        {
            "TracingEnabled": True,
            "AccessLogSetting": Match.object_like({"DestinationArn": Match.any_value()}),
            "MethodSettings": Match.array_with(
                [
                    Match.object_like(
                        {"ThrottlingRateLimit": 50, "ThrottlingBurstLimit": 100, "DataTraceEnabled": False}
                    )
                ]
            ),
        },
    )


def test_the_api_calls_a_published_alias_of_the_scoring_lambda(
    template: Template, resources: Resources
) -> None:
    template.has_resource_properties("AWS::Lambda::Alias", {"Name": "live"})
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {
            "Handler": "lambdas.api.handler.handler",
            "Runtime": "python3.12",
            "Architectures": ["x86_64"],
            "TracingConfig": {"Mode": "Active"},
            "Environment": {
                "Variables": Match.object_like(
                    {"LOG_APPLICANT_VALUES": "false", "MODEL_BUNDLE_DIR": "model_artifacts/credit_risk"}
                )
            },
        },
    )
    uris = json.dumps(
        [
            m["Properties"].get("Integration", {})
            for m in _of_type(resources, "AWS::ApiGateway::Method").values()
        ]
    )
    assert "ServingLive" in uris  # integrations point at the alias, not $LATEST


def test_batch_queue_has_a_dead_letter_queue_alarm_and_a_fitting_visibility_timeout(
    template: Template,
) -> None:
    assert VISIBILITY_TIMEOUT.to_seconds() >= 6 * BATCH_TIMEOUT.to_seconds()
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": VISIBILITY_TIMEOUT.to_seconds(),
            "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": MAX_RECEIVE_COUNT},
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": "lambdas.batch.handler.handler", "Timeout": BATCH_TIMEOUT.to_seconds()},
    )
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "BatchSize": 1,
            # A bulk drop runs at most batchMaxConcurrency (default 10) batch functions at once
            "ScalingConfig": {"MaximumConcurrency": AppConfig().batch_max_concurrency},
        },
    )
    template.has_resource_properties(
        "Custom::S3BucketNotifications",
        {
            "NotificationConfiguration": {
                "QueueConfigurations": [
                    Match.object_like(
                        {"Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "incoming/"}]}}}
                    )
                ]
            }
        },
    )


def test_given_batch_max_concurrency_when_synthesised_then_the_event_source_is_capped_at_it(
    synthesised_with_options: Synthesised,
) -> None:
    synthesised_with_options.template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {"ScalingConfig": {"MaximumConcurrency": OPTIONS["batchMaxConcurrency"]}},
    )


def test_given_the_incoming_queue_then_only_this_accounts_scoring_bucket_may_send_to_it(
    resources: Resources,
) -> None:
    queue_id = next(name for name in _of_type(resources, "AWS::SQS::Queue") if "IncomingQueue" in name)
    bucket_id = next(name for name in _of_type(resources, "AWS::S3::Bucket") if "ScoringBucket" in name)
    (policy,) = [
        p
        for p in _of_type(resources, "AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue_id}]
    ]
    from_s3 = [
        statement
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
        if statement["Effect"] == "Allow" and statement.get("Principal") == {"Service": "s3.amazonaws.com"}
    ]
    assert from_s3  # S3 event notifications are allowed in...
    for statement in from_s3:  # ...from the scoring bucket, of this account only
        assert statement["Condition"] == {
            "ArnLike": {"aws:SourceArn": {"Fn::GetAtt": [bucket_id, "Arn"]}},
            "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        }


def test_given_the_api_cloudwatch_role_then_it_outlives_the_stack_that_set_it(resources: Resources) -> None:
    (account,) = _of_type(resources, "AWS::ApiGateway::Account").values()
    role_id = account["Properties"]["CloudWatchRoleArn"]["Fn::GetAtt"][0]
    role = resources[role_id]
    assert "AmazonAPIGatewayPushToCloudWatchLogs" in json.dumps(role["Properties"]["ManagedPolicyArns"])
    # Then destroying this stack deletes neither the account-wide role nor the setting pointing at it
    assert role["DeletionPolicy"] == "Retain"
    assert role["UpdateReplacePolicy"] == "Retain"
    assert account["DeletionPolicy"] == "Retain"


def test_alarms_cover_every_failure_mode_the_issue_names(resources: Resources) -> None:
    descriptions = " | ".join(
        a["Properties"].get("AlarmDescription", "")
        for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()
    )
    for expected in (
        "5xx",
        "p99",
        "throttled",
        "dead-letter",
        "batch scoring Lambda failed",
        "retraining run failed",
    ):
        assert expected in descriptions, expected
    assert len(_of_type(resources, "AWS::CloudWatch::Dashboard")) == 1


_DATA_SERVICES = ("s3", "kms", "secretsmanager", "rds", "sqs")


def test_no_wildcard_actions_and_no_data_actions_on_every_resource(resources: Resources) -> None:
    # Given every IAM policy, then no statement allows "*" or a whole service ("s3:*"), and no
    # statement granting data-service actions applies to Resource "*" (except the documented export-task
    # actions rds:DescribeExportTasks and rds:CancelExportTask, see docs/deploy.md "Retraining").
    for name, policy in _of_type(resources, "AWS::IAM::Policy").items():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for action in actions:
                assert action != "*", name
                assert not re.fullmatch(r"[a-z0-9-]+:\*", action), (name, action)
            if statement.get("Resource") == "*" and statement["Effect"] == "Allow":
                data_actions = [a for a in actions if a.split(":")[0] in _DATA_SERVICES]
                assert set(data_actions) <= {"rds:DescribeExportTasks", "rds:CancelExportTask"}, (
                    name,
                    data_actions,
                )


def test_batch_lambda_grants_are_scoped_to_its_prefixes(resources: Resources) -> None:
    policy = next(
        p for n, p in _of_type(resources, "AWS::IAM::Policy").items() if n.startswith("BatchBatchFunction")
    )
    text = json.dumps(policy["Properties"]["PolicyDocument"])
    for prefix in ("/incoming/*", "/scored/*", "/rejected/*", "/manifests/*"):
        assert prefix in text
    assert '"/*"' not in text  # never the whole bucket
    # Writes are uploads only: no object tags, legal holds or retention, and only the two key actions an
    # upload (multipart included) needs
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    actions = {
        a for s in statements for a in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
    }
    assert {a for a in actions if a.startswith("s3:Put") or a.startswith("s3:Abort")} == {
        "s3:PutObject",
        "s3:AbortMultipartUpload",
    }
    assert {a for a in actions if a.startswith("kms:")} == {
        "kms:Decrypt",
        "kms:DescribeKey",
        "kms:GenerateDataKey",
    }


def test_vpc_has_flow_logs_and_the_endpoints_in_vpc_tasks_need(
    template: Template, resources: Resources
) -> None:
    template.resource_count_is("AWS::EC2::FlowLog", 1)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 7)  # S3 gateway + 6 interface endpoints
    # Every interface endpoint has a network interface in both AZs' isolated subnets
    isolated = {name for name in _of_type(resources, "AWS::EC2::Subnet") if "isolated" in name}
    assert len(isolated) == 2
    interface_endpoints = [
        e["Properties"]
        for e in _of_type(resources, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"].get("VpcEndpointType") == "Interface"
    ]
    assert len(interface_endpoints) == 6
    for endpoint in interface_endpoints:
        assert {ref["Ref"] for ref in endpoint["SubnetIds"]} == isolated


def test_given_the_drift_metrics_when_synthesised_then_one_alarm_watches_batch_files_and_api_windows(
    resources: Resources,
) -> None:
    (drift_alarm,) = [
        a["Properties"]
        for a in _of_type(resources, "AWS::CloudWatch::Alarm").values()
        if "drifted significantly" in a["Properties"].get("AlarmDescription", "")
    ]
    # The metrics the Lambdas emit (lambdas/batch/wiring.py, lambdas/api/app.py), per service name
    watched = {
        query["MetricStat"]["Metric"]["MetricName"]: query["MetricStat"]["Metric"]
        for query in drift_alarm["Metrics"]
        if "MetricStat" in query
    }
    assert set(watched) == {"FilesDrifted", "WindowsDrifted"}
    assert watched["FilesDrifted"]["Dimensions"] == [{"Name": "service", "Value": "loan-scoring-batch"}]
    assert watched["WindowsDrifted"]["Dimensions"] == [{"Name": "service", "Value": "loan-scoring-api"}]
    assert all(metric["Namespace"] == "LoanScoring/dev" for metric in watched.values())
    assert drift_alarm["ComparisonOperator"] == "GreaterThanThreshold"
    assert drift_alarm["Threshold"] == 0


def test_given_every_alarm_when_synthesised_then_the_dashboard_shows_it(resources: Resources) -> None:
    (dashboard,) = _of_type(resources, "AWS::CloudWatch::Dashboard").values()
    body = json.dumps(dashboard["Properties"]["DashboardBody"])
    alarms = _of_type(resources, "AWS::CloudWatch::Alarm")
    # The canary's own alarms (CodeDeploy acts on them) included, so operators see why a rollout stopped
    assert any(name.startswith("ServingRollout") for name in alarms)
    assert [name for name in alarms if name not in body] == []


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


_THIS_ACCOUNT = {"Ref": "AWS::AccountId"}


def _logs_key_id(resources: Resources) -> str:
    """The one KMS key the log groups name (fails if a log group is not encrypted)."""
    log_groups = _of_type(resources, "AWS::Logs::LogGroup")
    assert [name for name, group in log_groups.items() if "KmsKeyId" not in group["Properties"]] == []
    (key_id,) = {str(group["Properties"]["KmsKeyId"]["Fn::GetAtt"][0]) for group in log_groups.values()}
    return key_id


def test_given_every_log_group_then_it_is_encrypted_with_one_rotating_customer_managed_key(
    synthesised: Synthesised, synthesised_with_options: Synthesised
) -> None:
    # Flow logs, API access logs, both scoring functions, the rollout check, the snapshot sweeper, training
    # tasks, state machine, Firehose, and the web ACL's log in the default app (the options variant
    # switches the firewall off)
    for variant, count in ((synthesised, 10), (synthesised_with_options, 9)):
        resources = variant.template_json["Resources"]
        assert len(_of_type(resources, "AWS::Logs::LogGroup")) == count
        key = resources[_logs_key_id(resources)]
        assert key["Type"] == "AWS::KMS::Key"
        assert key["Properties"]["EnableKeyRotation"] is True


def test_given_the_logs_key_then_cloudwatch_logs_may_use_it_for_this_accounts_log_groups_only(
    resources: Resources,
) -> None:
    statements = resources[_logs_key_id(resources)]["Properties"]["KeyPolicy"]["Statement"]
    region = {"Ref": "AWS::Region"}
    for_the_service = [s for s in statements if "Service" in s["Principal"]]
    assert for_the_service == [
        {
            "Sid": "CloudWatchLogsEncryptsThisAccountsLogGroups",
            "Effect": "Allow",
            "Principal": {"Service": {"Fn::Join": ["", ["logs.", region, ".amazonaws.com"]]}},
            "Action": [
                "kms:Decrypt*",
                "kms:Describe*",
                "kms:Encrypt*",
                "kms:GenerateDataKey*",
                "kms:ReEncrypt*",
            ],
            "Resource": "*",
            "Condition": {
                "ArnLike": {
                    "kms:EncryptionContext:aws:logs:arn": {
                        "Fn::Join": [
                            "",
                            [
                                "arn:",
                                {"Ref": "AWS::Partition"},
                                ":logs:",
                                region,
                                ":",
                                _THIS_ACCOUNT,
                                ":log-group:*",
                            ],
                        ]
                    }
                }
            },
        }
    ]
    # And the only other statement is the account's own administration of the key (CDK's default)
    others = [s for s in statements if s not in for_the_service]
    assert len(others) == 1
    assert others[0]["Principal"]["AWS"]["Fn::Join"][1][-1] == ":root"


# The IAM action prefix of each interface endpoint's service (by the end of its service name).
_ENDPOINT_ACTIONS = {
    ".ecr.api": "ecr:*",
    ".ecr.dkr": "ecr:*",
    ".logs": "logs:*",
    ".secretsmanager": "secretsmanager:*",
    ".kms": "kms:*",
    ".sts": "sts:*",
}


def _endpoints(resources: Resources, kind: str) -> dict[str, dict[str, Any]]:
    """Endpoints of ``kind`` (Interface, Gateway) by the end of their service name (".kms", ".s3")."""
    return {
        e["Properties"]["ServiceName"]["Fn::Join"][1][-1]: e["Properties"]
        for e in _of_type(resources, "AWS::EC2::VPCEndpoint").values()
        if e["Properties"]["VpcEndpointType"] == kind
    }


def test_given_the_interface_endpoints_then_only_this_accounts_principals_may_use_them(
    synthesised: Synthesised, synthesised_with_options: Synthesised
) -> None:
    for variant in (synthesised, synthesised_with_options):
        endpoints = _endpoints(variant.template_json["Resources"], "Interface")
        assert set(endpoints) == set(_ENDPOINT_ACTIONS)
        for service, endpoint in endpoints.items():
            # Then the default full-access policy is replaced: the service's actions, this account only
            assert endpoint.get("PolicyDocument", {}).get("Statement") == [
                {
                    "Sid": "ThisAccountsPrincipalsOnly",
                    "Effect": "Allow",
                    "Principal": {"AWS": "*"},
                    "Action": _ENDPOINT_ACTIONS[service],
                    "Resource": "*",
                    "Condition": {"StringEquals": {"aws:PrincipalAccount": _THIS_ACCOUNT}},
                }
            ], service


def test_given_the_s3_gateway_endpoint_then_it_reaches_this_accounts_buckets_and_ecr_layers_only(
    synthesised: Synthesised, synthesised_with_options: Synthesised
) -> None:
    for variant in (synthesised, synthesised_with_options):  # with the NAT, the egress subnets use it too
        (gateway,) = _endpoints(variant.template_json["Resources"], "Gateway").values()
        assert gateway.get("PolicyDocument", {}).get("Statement") == [
            {
                "Sid": "ThisAccountsBucketsOnly",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "s3:*",
                "Resource": "*",
                "Condition": {"StringEquals": {"aws:ResourceAccount": _THIS_ACCOUNT}},
            },
            {
                # ECR image pulls fetch layers from this AWS-owned bucket: read only
                "Sid": "EcrImageLayers",
                "Effect": "Allow",
                "Principal": {"AWS": "*"},
                "Action": "s3:GetObject",
                "Resource": {
                    "Fn::Join": [
                        "",
                        [
                            "arn:",
                            {"Ref": "AWS::Partition"},
                            ":s3:::prod-",
                            {"Ref": "AWS::Region"},
                            "-starport-layer-bucket/*",
                        ],
                    ]
                },
            },
        ]


# Roles that read some prefixes of a bucket: (policy logical id prefix, bucket logical id prefix, what
# they read). The training steps are checked in test_training_permissions.py.
_PREFIX_READERS = [
    # Its input and its own manifests (a file whose complete manifest exists is not scored again); a new
    # file has no manifest, which S3 answers with 404 only to a caller that may list the whole bucket
    ("BatchBatchFunction", "BatchScoringBucket", ["incoming/*", "manifests/*"], False),
    ("DataLoaderTaskTaskRole", "DataExportBucket", ["datasets/*"], True),
    ("ServingScoringFunction", "TrainingArtifactBucket", ["models/*"], True),
]


@pytest.mark.parametrize(("policy_prefix", "bucket_prefix", "patterns", "list_only_those"), _PREFIX_READERS)
def test_given_a_role_reading_some_prefixes_then_it_reads_only_those_and_lists_no_more_than_it_must(
    resources: Resources, policy_prefix: str, bucket_prefix: str, patterns: list[str], list_only_those: bool
) -> None:
    (bucket,) = [name for name in _of_type(resources, "AWS::S3::Bucket") if name.startswith(bucket_prefix)]
    bucket_arn = {"Fn::GetAtt": [bucket, "Arn"]}
    (policy,) = [p for n, p in _of_type(resources, "AWS::IAM::Policy").items() if n.startswith(policy_prefix)]
    statements = policy["Properties"]["PolicyDocument"]["Statement"]
    # Then on the bucket itself only s3:ListBucket (no s3:GetBucket*), and where the code never probes a
    # missing key only for key names under what it reads (not the file names data teams upload, run ids)
    on_bucket = [s for s in statements if bucket_arn in _as_list(s["Resource"])]
    listing: dict[str, Any] = {"Action": "s3:ListBucket", "Effect": "Allow", "Resource": bucket_arn}
    if list_only_those:
        listing["Condition"] = {"StringLike": {"s3:prefix": patterns}}
    assert on_bucket == [listing]
    # And it reads exactly the objects under those prefixes
    reads = [
        "".join(resource["Fn::Join"][1][1:]).lstrip("/")
        for s in statements
        if "s3:GetObject*" in _as_list(s["Action"])
        for resource in _as_list(s["Resource"])
        if isinstance(resource, dict) and resource.get("Fn::Join", ["", [None]])[1][0] == bucket_arn
    ]
    assert sorted(reads) == sorted(patterns)
