"""Data: private RDS MariaDB, the snapshot-export bucket and role, and the in-VPC dataset loader."""

from __future__ import annotations

from aws_cdk import ArnFormat, CfnElement, Duration, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.buckets import grant_read_under, refuse_other_encryption, rotating_key, secure_bucket
from infra.config import AppConfig
from infra.execution_roles import LAMBDA_DEFAULT_LOG_GROUPS, cdk_helper_role
from infra.nag import (
    ANY_RESOURCE,
    KMS_WRITE_ACTIONS,
    S3_OBJECT_READ_ACTIONS,
    bucket_objects,
    suppress,
)
from infra.network import Network

DATABASE_NAME = "loans"
DATASET_PREFIX = "datasets/"  # where files for the loader are dropped in the export bucket
# Where RDS writes snapshot exports in the export bucket (StartExportTask's S3Prefix, without the "/"):
# training reads, and the lifecycle rule expires, this prefix only, never the loader's datasets/.
EXPORT_PREFIX = "exports/"
EXPORT_LIFECYCLE_DAYS = 90
# Database logs sent to CloudWatch Logs; audit is the MariaDB audit plugin's (AUDIT_EVENTS).
LOG_EXPORTS = ("audit", "error", "slowquery")
AUDIT_EVENTS = ("CONNECT", "QUERY_DDL", "QUERY_DCL")
SLOW_QUERY_SECONDS = 2
# The RDS CA bundle inside the training image: RDS server certificates chain to RDS's own CAs, which no
# system trust store holds, so the loader verifies the server against this file (DB_TLS_CA).
RDS_CA_BUNDLE = "/etc/ssl/rds/global-bundle.pem"
# CDK's singleton log-retention function, a child of the stack named LogRetention<uuid>.
_LOG_RETENTION_HELPER = "LogRetention"


class Data(Construct):
    """RDS holds the loan data; snapshots are exported as Parquet to ``export_bucket`` for training."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        network: Network,
        access_logs: s3.IBucket,
        removal_policy: RemovalPolicy,
    ) -> None:
        """``removal_policy`` is the database's; what cannot be snapshotted (the key, which the final
        snapshot is encrypted with, the secret and the bucket) is kept (RETAIN) instead of snapshotted."""
        super().__init__(scope, construct_id)
        kept_with_database = (
            RemovalPolicy.RETAIN if removal_policy == RemovalPolicy.SNAPSHOT else removal_policy
        )
        self.key = rotating_key(
            self,
            "DataKey",
            description="Loan data: RDS storage, its secret, snapshot exports",
            removal_policy=kept_with_database,
        )
        self.database = self._build_database(config, network, removal_policy, kept_with_database)
        self.export_bucket = secure_bucket(
            self,
            "ExportBucket",
            key=self.key,
            access_logs=access_logs,
            removal_policy=kept_with_database,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-exports", prefix=EXPORT_PREFIX, expiration=Duration.days(EXPORT_LIFECYCLE_DAYS)
                )
            ],
        )
        # Files dropped for the loader (RDS writes exports/ itself, naming the key its own way).
        refuse_other_encryption(self.export_bucket, self.key, DATASET_PREFIX + "*")
        self.export_role = self._build_export_role()
        self.loader_security_group = ec2.SecurityGroup(
            self,
            "LoaderSecurityGroup",
            vpc=network.vpc,
            description="Dataset loader task",
            allow_all_outbound=True,
        )
        self.database.connections.allow_default_port_from(self.loader_security_group, "dataset loader")
        self._acknowledge_database_ingress()

    def _acknowledge_database_ingress(self) -> None:
        """The database's ingress rules (the loader's, the rotation function's) name a source security
        group, never a CIDR; cdk-nag's port rules throw on their port, the instance's Endpoint.Port
        reference, and report the throw as a finding."""
        for group in self.database.connections.security_groups:
            for child in group.node.children:
                if isinstance(child, ec2.CfnSecurityGroupIngress) and child.cidr_ip is None:
                    for rule in (
                        "NIST.800.53.R5-EC2RestrictedSSH",
                        "NIST.800.53.R5-EC2RestrictedCommonPorts",
                    ):
                        suppress(
                            child,
                            rule,
                            "SC-7/AC-17 ask that SSH and common database ports not be open to 0.0.0.0/0. "
                            "The rule fires only because the port is a CloudFormation token (the "
                            "instance's Endpoint.Port, 3306): the rule admits that one port from one "
                            "source security group (the loader or the secret-rotation function), no CIDR.",
                        )

    @property
    def secret(self) -> rds.DatabaseSecret:
        secret = self.database.secret
        assert secret is not None  # generated below, always present
        return secret  # type: ignore[return-value]

    def _build_database(
        self,
        config: AppConfig,
        network: Network,
        removal_policy: RemovalPolicy,
        secret_removal_policy: RemovalPolicy,
    ) -> rds.DatabaseInstance:
        engine = rds.DatabaseInstanceEngine.maria_db(version=rds.MariaDbEngineVersion.VER_10_11_16)
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description="TLS required; slow queries logged to the exported slowquery log",
            parameters={
                "require_secure_transport": "ON",
                "slow_query_log": "1",
                "long_query_time": str(SLOW_QUERY_SECONDS),
                # RDS exports log files to CloudWatch, never the mysql.* log tables.
                "log_output": "FILE",
            },
        )
        # Who connected and what changed the schema or the grants: the MariaDB audit plugin (RDS for
        # MariaDB 10.11 supports it). Not every query, which would put applicant data in the logs.
        options = rds.OptionGroup(
            self,
            "Options",
            engine=engine,
            description="MariaDB audit plugin: connections, DDL and DCL",
            configurations=[
                rds.OptionConfiguration(
                    name="MARIADB_AUDIT_PLUGIN",
                    settings={"SERVER_AUDIT_EVENTS": ",".join(AUDIT_EVENTS)},
                )
            ],
        )
        # RDS makes no outbound connections: the group admits its clients and lets nothing out.
        security_group = ec2.SecurityGroup(
            self,
            "DatabaseSecurityGroup",
            vpc=network.vpc,
            description="Loan database: MariaDB from the loader and the secret-rotation function only",
            allow_all_outbound=False,
        )
        # CDK's log-retention helper function (which sets the exported log groups' retention) gets a role
        # that writes Lambda's default log groups only, instead of AWS's managed policy on every group.
        # CDK would also allow it logs:PutRetentionPolicy and DeleteRetentionPolicy on "*" (any log group
        # of the account, the scoring functions' and CloudTrail's included): it is handed the role
        # without policy updates, and _scope_log_retention_role grants what the helper does.
        log_retention_role = cdk_helper_role(self, "LogRetentionRole")
        database = rds.DatabaseInstance(
            self,
            "Database",
            engine=engine,
            instance_type=ec2.InstanceType(config.rds_instance_class.removeprefix("db.")),
            vpc=network.vpc,
            vpc_subnets=network.isolated_subnets,
            publicly_accessible=False,
            security_groups=[security_group],
            database_name=DATABASE_NAME,
            credentials=rds.Credentials.from_generated_secret("loanadmin", encryption_key=self.key),
            storage_encrypted=True,
            storage_encryption_key=self.key,
            allocated_storage=20,
            max_allocated_storage=100,
            multi_az=config.rds_multi_az,
            parameter_group=parameters,
            option_group=options,
            backup_retention=Duration.days(7),
            # OS metrics (CPU steal, memory, I/O, processes) every minute into CloudWatch Logs (RDSOSMetrics).
            monitoring_interval=Duration.seconds(60),
            iam_authentication=True,
            # No "general": it would log every statement, applicant data included.
            cloudwatch_logs_exports=list(LOG_EXPORTS),
            cloudwatch_logs_retention=logs.RetentionDays.ONE_MONTH,
            cloudwatch_logs_retention_role=log_retention_role.without_policy_updates(),
            deletion_protection=config.rds_deletion_protection,
            removal_policy=removal_policy,
            auto_minor_version_upgrade=True,
        )
        self._scope_log_retention_role(log_retention_role, database)
        # The credentials stay as long as the database (or its final snapshot) does: without them it
        # could not be logged into. (database.secret is the attachment; the secret is this child.)
        generated_secret = database.node.find_child("Secret")
        assert isinstance(generated_secret, rds.DatabaseSecret)
        generated_secret.apply_removal_policy(secret_removal_policy)
        # No endpoint= here: CDK would point the function at https://<vpce id>.secretsmanager.<region>...,
        # not a host name the endpoint's DNS documents. The interface endpoint has private DNS, so the
        # standard host name (CDK's default) resolves to it from the isolated subnets.
        database.add_rotation_single_user(
            automatically_after=Duration.days(30),
            vpc_subnets=network.isolated_subnets,
        )
        suppress(
            database,
            "AwsSolutions-RDS11",
            "The default port is kept: the instance has no public route and its security group admits only "
            "the loader and the rotation function; a non-standard port adds no real protection.",
        )
        suppress(
            database,
            "AwsSolutions-IAM4",
            "Enhanced Monitoring's role (assumable by monitoring.rds.amazonaws.com only) uses the "
            "AWS-managed AmazonRDSEnhancedMonitoringRole policy: it creates, writes and sets the retention "
            "of log groups named RDS* only (Enhanced Monitoring's is RDSOSMetrics); the stack's own log "
            "groups, the audit trail's sources among them, are named after the stack.",
            findings=[
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonRDSEnhancedMonitoringRole"
            ],
        )
        suppress(
            database,
            "NIST.800.53.R5-RDSLoggingEnabled",
            "AU-2/AU-12 ask for audit records of events that matter. The audit (connections, DDL, DCL), "
            "error and slow query logs are exported; the general log is not, because it records every "
            "statement, applicant data included, in the clear in CloudWatch Logs. Deployers who must log "
            "every query add 'general' to LOG_EXPORTS and treat that log group as applicant data.",
            findings=["LogExport::general"],
        )
        suppress(
            database,
            "NIST.800.53.R5-RDSInBackupPlan",
            "CP-9 asks for backups of system data. The instance has RDS automated backups (7 days, "
            "point-in-time restore) encrypted with the data key, deletion protection by default, and is "
            "kept or snapshotted when the stack is removed (dataRemovalPolicy). AWS Backup would add a "
            "vault and cross-account/region copies: deployers whose policy requires it add the instance "
            "to their organisation's AWS Backup plan (a backup.BackupPlan or a tag-based selection).",
        )
        if not config.rds_multi_az:
            suppress(
                database,
                "AwsSolutions-RDS3",
                "Multi-AZ is a cdk.json option (rdsMultiAz); single-AZ is the cost-conscious default for a "
                "training store that is rebuilt from exports and automated backups.",
            )
            suppress(
                database,
                "NIST.800.53.R5-RDSMultiAZSupport",
                "CP-10/SC-36 ask for recovery and distributed processing. rdsMultiAz=false is the cost-"
                "conscious default: the database is the training store (the scoring API and batch never "
                "read it), restored from automated backups if its AZ fails. Set rdsMultiAz=true (then "
                "this acknowledgement is not made) where the policy requires a standby.",
            )
        if not config.rds_deletion_protection:
            suppress(
                database,
                "AwsSolutions-RDS10",
                "Deletion protection turned off in cdk.json for this environment.",
            )
        return database

    def _scope_log_retention_role(self, role: iam.Role, database: rds.DatabaseInstance) -> None:
        """What CDK's log-retention helper does with this database's exported log groups: create each
        (its handler calls logs:CreateLogGroup first, as RDS creates the group only when it first exports
        a line, and fails on anything but "already exists") and set or remove its retention; and set its
        own log group's retention (/aws/lambda/<its name>, made at deploy time). Nothing is written to
        the database's groups, and no other group's retention can be changed."""
        stack = Stack.of(self)

        def log_groups(name: str) -> str:
            return stack.format_arn(
                service="logs",
                resource="log-group",
                resource_name=name,
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )

        exported_groups = log_groups(f"/aws/rds/instance/{database.instance_identifier}/*")
        role.add_to_policy(iam.PolicyStatement(actions=["logs:CreateLogGroup"], resources=[exported_groups]))
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy"],
                resources=[exported_groups, log_groups(LAMBDA_DEFAULT_LOG_GROUPS)],
            )
        )
        # CDK makes its helper wait for the policies of the role it was given; the role without policy
        # updates has none, so the wait is stated here (else its first run could meet no permissions).
        helpers = [c for c in stack.node.children if c.node.id.startswith(_LOG_RETENTION_HELPER)]
        if not helpers:
            raise RuntimeError("the database's log exports need CDK's log-retention helper; none found")
        for helper in helpers:
            helper.node.add_dependency(role)
        instance = database.node.default_child
        assert isinstance(instance, CfnElement)
        database_id = stack.get_logical_id(instance)
        suppress(
            role,
            "AwsSolutions-IAM5",
            "The log-retention helper creates the database's exported log groups "
            "(/aws/rds/instance/<this instance>/audit, error, slowquery) when RDS has not yet, and sets "
            "their retention: the wildcard covers that one instance's export groups, and the actions are "
            "CreateLogGroup and Put/DeleteRetentionPolicy only, no writes.",
            findings=[
                "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:"
                f"/aws/rds/instance/<{database_id}>/*"
            ],
        )

    def _build_export_role(self) -> iam.Role:
        """The role RDS assumes to write a snapshot export into the export bucket, under EXPORT_PREFIX
        only: the state machine's StartExportTask names that prefix (S3Prefix), so the role cannot be
        used to write, read or delete the loader's datasets/ files or anything else in the bucket."""
        role = iam.Role(
            self,
            "SnapshotExportRole",
            assumed_by=iam.ServicePrincipal(
                "export.rds.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="RDS snapshot export writes Parquet under the export bucket's exports/ prefix",
        )
        # The actions the RDS user guide lists for the export role. The bucket-level two cannot be
        # scoped by ARN; RDS does not document which prefixes it lists, so no s3:prefix condition.
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:ListBucket", "s3:GetBucketLocation"], resources=[self.export_bucket.bucket_arn]
            )
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["s3:PutObject*", "s3:GetObject*", "s3:DeleteObject*"],
                resources=[self.export_bucket.arn_for_objects(EXPORT_PREFIX + "*")],
            )
        )
        # S3 encrypts and decrypts the SSE-KMS objects with the caller's (this role's) use of the key.
        self.key.grant(
            role, "kms:Decrypt", "kms:DescribeKey", "kms:Encrypt", "kms:GenerateDataKey*", "kms:ReEncrypt*"
        )
        suppress(
            role,
            "AwsSolutions-IAM5",
            "The RDS export role's documented object actions (s3:PutObject*, s3:GetObject*, "
            f"s3:DeleteObject*) on the {EXPORT_PREFIX} prefix of the export bucket only (the state "
            "machine's S3Prefix; each export's folder is named at run time), and data-key use of the "
            "bucket's key for the SSE-KMS objects (kms:GenerateDataKey*, kms:ReEncrypt*).",
            findings=[
                "Action::s3:PutObject*",
                *S3_OBJECT_READ_ACTIONS,
                "Action::s3:DeleteObject*",
                *KMS_WRITE_ACTIONS,
                bucket_objects(self.export_bucket, EXPORT_PREFIX + "*"),
            ],
        )
        return role

    def build_loader_task(
        self, cluster: ecs.ICluster, image: ecs.ContainerImage, log_group: logs.ILogGroup
    ) -> ecs.FargateTaskDefinition:
        """Fargate task that runs ``python -m training load`` inside the VPC against RDS."""
        task = ecs.FargateTaskDefinition(self, "LoaderTask", cpu=512, memory_limit_mib=2048)
        task.add_container(
            "loader",
            image=image,
            command=[
                "python",
                "-m",
                "training",
                "load",
                "--dataset",
                "credit_risk",
                "--files",
                self.export_bucket.s3_url_for_object(DATASET_PREFIX + "credit_risk/"),
            ],
            environment={
                "DB_SECRET_ARN": self.secret.secret_arn,
                "DB_TLS": "true",
                "DB_TLS_CA": RDS_CA_BUNDLE,
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="loader", log_group=log_group),
        )
        self.secret.grant_read(task.task_role)
        grant_read_under(self.export_bucket, task.task_role, DATASET_PREFIX + "*", probes_missing_keys=False)
        suppress(
            task.task_role,
            "AwsSolutions-IAM5",
            "Read and list access is limited to the datasets/ prefix of the export bucket (object wildcard).",
            findings=[*S3_OBJECT_READ_ACTIONS, bucket_objects(self.export_bucket, DATASET_PREFIX + "*")],
        )
        suppress(
            task.obtain_execution_role(),
            "AwsSolutions-IAM5",
            "ecr:GetAuthorizationToken has no resource-level permissions; pulls and log writes are scoped.",
            findings=[ANY_RESOURCE],
        )
        suppress(
            task,
            "AwsSolutions-ECS2",
            "Only non-secret settings (the secret's ARN, the TLS flag, the CA bundle's path) are environment "
            "variables; the loader reads the credentials from Secrets Manager at run time.",
        )
        return task
