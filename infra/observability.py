"""Observability: one dashboard and the alarms an operator needs, optionally e-mailed through SNS."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.alarms import alarm_on_any, alarm_on_sustained, periods_covering
from infra.batch_scoring import BATCH_TIMEOUT, BatchScoring
from infra.buckets import rotating_key
from infra.config import AppConfig
from infra.nag import suppress
from infra.queues import dead_letter_queue
from infra.scoring_functions import metrics_namespace, service_name

FIVE_XX_RATE_PERCENT = 1.0
P99_LATENCY_MS = 2000
PERIOD = Duration.minutes(5)
# Drift metrics (Powertools EMF, dimension "service"): the batch Lambda's per file, the API's per
# window of applications in one execution environment.
DRIFT_PERIOD = Duration.hours(1)
# The incoming queue deletes a message when its 4-day retention ends, without the dead-letter queue: a
# file still waiting after this long is not being taken (event source disabled, concurrency starved).
# Well above the ~4.5 h a failing message spends there (3 tries, each hidden for the 90-min visibility
# timeout) and days before the retention ends.
BACKLOG_AGE = Duration.hours(12)
# Requests API Gateway answered 429: the stage throttle (infra/serving.py) or the web ACL's per-address
# rate rule (infra/firewall.py). Counted from the stage's access log, whose JSON format writes the status as
# a string ("status":"429"): API Gateway publishes no 429-only metric (4XXError mixes in every 400).
TOO_MANY_REQUESTS_PATTERN = logs.FilterPattern.string_value("$.status", "=", "429")
TOO_MANY_REQUESTS_METRIC = "ApiTooManyRequests"
# A burst a little above the stage's token bucket draws a few 429s that the client's retries absorb; more
# than this many in a 5-minute period, in 2 of 3 periods, is a caller being kept out for 10 minutes or more.
TOO_MANY_REQUESTS_THRESHOLD = 50


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        api: apigw.RestApi,
        api_access_logs: logs.ILogGroup,
        api_function: lambda_.IFunction,
        batch: BatchScoring,
        state_machine: sfn.StateMachine,
        schedule_alarm: cloudwatch.Alarm | None,
        snapshot_sweeper_alarm: cloudwatch.Alarm,
        rollout_alarms: dict[str, cloudwatch.Alarm],
        audit_delivery_alarm: cloudwatch.Alarm,
        audit_forwarding_alarm: cloudwatch.Alarm,
    ) -> None:
        """``rollout_alarms`` (the API canary's, owned by CodeDeploy) and ``schedule_alarm`` (the retraining
        schedule's undelivered starts, when there is a schedule) and ``snapshot_sweeper_alarm`` (failed
        sweeps of leftover retraining snapshots) are e-mailed and shown with the rest.
        ``api_access_logs`` is the stage's access log group (JSON lines with a "status" key)."""
        super().__init__(scope, construct_id)
        namespace = metrics_namespace(config)
        requests = api.metric_count(period=PERIOD, statistic="Sum")
        server_errors = api.metric_server_error(period=PERIOD, statistic="Sum")
        five_xx_rate = cloudwatch.MathExpression(
            expression="IF(requests > 0, 100 * errors / requests, 0)",
            using_metrics={"requests": requests, "errors": server_errors},
            label="5xx rate (%)",
            period=PERIOD,
        )
        latency_p99 = api.metric_latency(period=PERIOD, statistic="p99")
        # Each term FILLed with 0: metric math drops a period in which any term has no datapoint, and a
        # Lambda publishes no Throttles while it is not invoked (an idle batch function would hide the
        # API's throttles); the Step Functions counts below are just as sparse.
        throttles = cloudwatch.MathExpression(
            expression="FILL(api, 0) + FILL(batch, 0)",
            using_metrics={
                "api": api_function.metric_throttles(period=PERIOD, statistic="Sum"),
                "batch": batch.function.metric_throttles(period=PERIOD, statistic="Sum"),
            },
            label="Lambda throttles",
            period=PERIOD,
        )
        # The environment's namespace, shared with the handlers' own metrics (other names): a metric
        # filter cannot add a fixed dimension, so the namespace tells two stacks in one account apart.
        # Every other line of the log counts 0, so a busy API without 429s reads 0 rather than no data.
        too_many_requests = logs.MetricFilter(
            self,
            "ApiTooManyRequestsFilter",
            log_group=api_access_logs,
            filter_pattern=TOO_MANY_REQUESTS_PATTERN,
            metric_namespace=namespace,
            metric_name=TOO_MANY_REQUESTS_METRIC,
            metric_value="1",
            default_value=0,
        ).metric(period=PERIOD, statistic="Sum")
        self.alarms: dict[str, cloudwatch.Alarm] = {
            "Api5xxRate": alarm_on_sustained(
                self,
                "Api5xxRate",
                five_xx_rate,
                threshold=FIVE_XX_RATE_PERCENT,
                description=f"{FIVE_XX_RATE_PERCENT}% or more of API requests end in 5xx",
            ),
            "ApiLatencyP99": alarm_on_sustained(
                self,
                "ApiLatencyP99",
                latency_p99,
                threshold=P99_LATENCY_MS,
                description=f"API p99 latency of {P99_LATENCY_MS} ms or more",
            ),
            "ApiTooManyRequests": alarm_on_sustained(
                self,
                "ApiTooManyRequests",
                too_many_requests,
                threshold=TOO_MANY_REQUESTS_THRESHOLD,
                comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                description=f"The API answered more than {TOO_MANY_REQUESTS_THRESHOLD} requests in 5 "
                "minutes with 429 (stage throttle or the web ACL's per-address rate limit), in 2 of the "
                "last 3 periods: callers are being turned away; the access log names who (ip, caller)",
            ),
            "LambdaThrottles": alarm_on_any(
                self, "LambdaThrottles", throttles, "A scoring Lambda was throttled"
            ),
            "BatchFailures": alarm_on_any(
                self,
                "BatchFailures",
                # The handler reports a failed message in batchItemFailures and counts it as MessagesFailed
                # (not when the file was only busy in another invocation); Errors are timeouts and crashes.
                cloudwatch.MathExpression(
                    expression="FILL(errors, 0) + FILL(failed, 0)",
                    using_metrics={
                        "errors": batch.function.metric_errors(period=PERIOD, statistic="Sum"),
                        "failed": _service_metric(namespace, "batch", "MessagesFailed", "Sum", PERIOD),
                    },
                    label="Batch messages failed and Lambda errors",
                    period=PERIOD,
                ),
                "The batch scoring Lambda failed on a message (a fault, a timeout or a crash)",
                # Errors is stamped with the invocation's start, up to the 15-min timeout before it arrives.
                evaluation_periods=periods_covering(BATCH_TIMEOUT, PERIOD),
            ),
            "BatchBacklog": batch.queue.metric_approximate_age_of_oldest_message(
                period=PERIOD, statistic="Maximum"
            ).create_alarm(
                self,
                "BatchBacklog",
                threshold=BACKLOG_AGE.to_seconds(),
                evaluation_periods=1,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
                alarm_description=f"A batch file has waited over {BACKLOG_AGE.to_hours()} h in the incoming "
                "queue: the function is not taking messages, and the queue drops them after 4 days",
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            "TrainingFailures": alarm_on_any(
                self,
                "TrainingFailures",
                cloudwatch.MathExpression(
                    expression="FILL(failed, 0) + FILL(timedOut, 0) + FILL(aborted, 0)",
                    using_metrics={
                        "failed": state_machine.metric_failed(period=PERIOD, statistic="Sum"),
                        "timedOut": state_machine.metric_timed_out(period=PERIOD, statistic="Sum"),
                        "aborted": state_machine.metric_aborted(period=PERIOD, statistic="Sum"),
                    },
                    label="Training runs failed",
                    period=PERIOD,
                ),
                "A retraining run failed, timed out or was aborted",
            ),
            "DeadLetterQueue": batch.dlq_alarm,
            **({"TrainingScheduleUndelivered": schedule_alarm} if schedule_alarm else {}),
            "SnapshotSweeper": snapshot_sweeper_alarm,
            "AuditDelivery": audit_delivery_alarm,
            "AuditForwarding": audit_forwarding_alarm,
            **{f"Rollout{name}": alarm for name, alarm in rollout_alarms.items()},
            "ScoringDrift": alarm_on_any(
                self,
                "ScoringDrift",
                cloudwatch.MathExpression(
                    expression="FILL(files, 0) + FILL(windows, 0)",
                    using_metrics={
                        "files": _drift_metric(namespace, "batch", "FilesDrifted", "Sum"),
                        "windows": _drift_metric(namespace, "api", "WindowsDrifted", "Sum"),
                    },
                    label="Files and API windows drifted",
                    period=DRIFT_PERIOD,
                ),
                "Scored data drifted significantly from the model's reference data (PSI >= 0.25 for "
                "the score or a feature, in a batch file or a window of API applications; the manifest "
                "or the warning log names the feature)",
            ),
        }
        self.topic: sns.Topic | None = None
        if config.alarm_email:
            self.topic = self._build_alarm_topic(config.alarm_email)
            for alarm in self.alarms.values():
                alarm.add_alarm_action(actions.SnsAction(self.topic))
        else:
            # With alarmEmail set every alarm notifies the topic and the rule passes; without it they
            # still change state (dashboard, console, EventBridge "CloudWatch Alarm State Change").
            for alarm in self.alarms.values():
                suppress(
                    alarm,
                    "NIST.800.53.R5-CloudWatchAlarmAction",
                    "No alarmEmail in cdk.json: the alarm has no action, but it changes state on the "
                    "dashboard and emits an EventBridge alarm state change event that an organisation's "
                    "central alerting can route. Set alarmEmail to have every alarm notify an encrypted "
                    "SNS topic (then this acknowledgement is not made), the alerting CA-7/SI-4(12) expect.",
                )

        # Every metric an alarm watches is graphed below: the alarm panel says what fired, a graph when
        # and how much.
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"loan-scoring-{config.environment}"
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(title="API requests and 5xx rate", left=[requests], right=[five_xx_rate]),
            cloudwatch.GraphWidget(
                title="API latency p50 / p99",
                left=[api.metric_latency(period=PERIOD, statistic="p50"), latency_p99],
            ),
            cloudwatch.GraphWidget(
                title="Throttles: API answers 429 / Lambda throttles",
                left=[too_many_requests.with_(label="API answers 429 (throttled or rate-limited)")],
                right=[throttles],
            ),
            cloudwatch.GraphWidget(
                title="API: Lambda errors, faults (500) and rejected requests (400, 415)",
                left=[alarm.metric for alarm in rollout_alarms.values()],
                right=[_service_metric(namespace, "api", "ValidationErrors", "Sum", PERIOD)],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Batch: invocations, errors and failed messages",
                left=[
                    batch.function.metric_invocations(period=PERIOD),
                    batch.function.metric_errors(period=PERIOD),
                    _service_metric(namespace, "batch", "MessagesFailed", "Sum", PERIOD),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Batch: queue and dead-letter depth, oldest message (s)",
                left=[
                    batch.queue.metric_approximate_number_of_messages_visible(period=PERIOD),
                    batch.dead_letter_queue.metric_approximate_number_of_messages_visible(period=PERIOD),
                ],
                right=[
                    batch.queue.metric_approximate_age_of_oldest_message(period=PERIOD, statistic="Maximum")
                ],
            ),
            cloudwatch.GraphWidget(
                title="Training runs / snapshot sweeps failed",
                left=[
                    state_machine.metric_succeeded(period=PERIOD),
                    state_machine.metric_failed(period=PERIOD),
                    state_machine.metric_timed_out(period=PERIOD),
                    state_machine.metric_aborted(period=PERIOD),
                ],
                right=[snapshot_sweeper_alarm.metric],
            ),
            cloudwatch.GraphWidget(
                title="Batch: files scored and unreadable, rows rejected",
                left=[
                    _service_metric(namespace, "batch", name, "Sum", PERIOD)
                    for name in ("FilesScored", "FilesUnreadable")
                ],
                right=[_service_metric(namespace, "batch", "RowsRejected", "Sum", PERIOD)],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.GraphWidget(
                title="Drift against the model's reference data (PSI, worst file or API window per hour)",
                left=[
                    _drift_metric(namespace, function, name, "Maximum")
                    for function in ("api", "batch")
                    for name in ("ScorePsi", "MaxFeaturePsi")
                ],
                left_annotations=[
                    cloudwatch.HorizontalAnnotation(value=0.1, label="moderate"),
                    cloudwatch.HorizontalAnnotation(value=0.25, label="significant"),
                ],
                right=[
                    _drift_metric(namespace, "batch", "FilesDrifted", "Sum"),
                    _drift_metric(namespace, "api", "WindowsDrifted", "Sum"),
                ],
            ),
            cloudwatch.GraphWidget(
                title="Deliveries: audit trail and scheduled retraining starts",
                left=[
                    audit_forwarding_alarm.metric,
                    *([schedule_alarm.metric] if schedule_alarm else []),
                ],
                right=[audit_delivery_alarm.metric],
            ),
        )
        # Full width: one tile per alarm.
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24)
        )

    def _build_alarm_topic(self, email: str) -> sns.Topic:
        """An encrypted topic CloudWatch alarms can publish to, e-mailed to ``email``.

        CloudWatch cannot use the AWS-managed alias/aws/sns key (its policy cannot be changed to let the
        service in), so the topic has its own key. ``enforce_ssl`` replaces SNS's default topic policy,
        so CloudWatch's publish right is stated explicitly; principals of this account keep publishing
        through their IAM policies (and the key's default account statement).
        """
        account = Stack.of(self).account
        from_this_account = {"StringEquals": {"aws:SourceAccount": account}}
        cloudwatch_service = iam.ServicePrincipal("cloudwatch.amazonaws.com")
        # Encrypts only notifications in flight: nothing is left to decrypt once the topic is gone.
        key = rotating_key(
            self,
            "AlarmTopicKey",
            description="Alarm notifications (SNS topic)",
            removal_policy=RemovalPolicy.DESTROY,
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublishToTheTopic",
                principals=[cloudwatch_service],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=["*"],  # in a key policy, "*" is this key
                conditions=from_this_account,
            )
        )
        topic = sns.Topic(self, "AlarmTopic", master_key=key, enforce_ssl=True)
        topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="CloudWatchAlarmsPublish",
                principals=[cloudwatch_service],
                actions=["sns:Publish"],
                resources=[topic.topic_arn],
                conditions=from_this_account,
            )
        )
        # An alarm e-mail SNS cannot deliver (the address bounces, say) is kept 14 days, not dropped.
        undelivered = dead_letter_queue(
            self,
            "AlarmEmailDeadLetterQueue",
            holds="the alarm notifications SNS could not e-mail",
            then="reads them and fixes the subscription",
        )
        topic.add_subscription(subscriptions.EmailSubscription(email, dead_letter_queue=undelivered))
        return topic


def _drift_metric(namespace: str, function: str, name: str, statistic: str) -> cloudwatch.Metric:
    return _service_metric(namespace, function, name, statistic, DRIFT_PERIOD)


def _service_metric(
    namespace: str, function: str, name: str, statistic: str, period: Duration
) -> cloudwatch.Metric:
    """A metric a scoring function emits (Powertools EMF: namespace and "service" dimension as set in
    infra/scoring_functions.py)."""
    return cloudwatch.Metric(
        namespace=namespace,
        metric_name=name,
        label=f"{function} {name}",
        dimensions_map={"service": service_name(function)},
        statistic=statistic,
        period=period,
    )
