"""Serving: REST API Gateway -> scoring Lambda alias; IAM auth on every method but health by default.

The alias moves to each new version through CodeDeploy (infra/rollout.py), gradually and with rollback.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.config import AppConfig
from infra.execution_roles import role_of
from infra.gateway_responses import add_error_responses
from infra.log_groups import encrypted_log_group
from infra.nag import ANY_RESOURCE, suppress
from infra.registered_bundle import RegisteredBundle, grant_registry_read
from infra.rollout import ApiRollout, PreTrafficCheck
from infra.scoring_functions import scoring_function
from lambdas.api.stage import ROUTES

THROTTLE_RATE_PER_SECOND = 50
THROTTLE_BURST = 100
API_TIMEOUT = Duration.seconds(15)
# The legacy TLS 1.2 policy: TLS 1.2 and 1.3, no endpoint access mode to set (enhanced policies need one).
MINIMUM_TLS_POLICY = "TLS_1_2"


class Serving(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: AppConfig,
        model_registry: s3.IBucket,
        logs_key: kms.IKey,
    ) -> None:
        """``model_registry`` is the artifact bucket: the API may read its registered model bundles.

        ``logs_key`` encrypts the function's and the stage's access log groups.
        """
        super().__init__(scope, construct_id)
        # A registered version in the registry, or None to serve the packaged bundle.
        self.model_bundle = RegisteredBundle.of(config, model_registry)
        self.function = scoring_function(
            self,
            "ScoringFunction",
            config=config,
            function="api",
            logs_key=logs_key,
            memory_mb=config.lambda_memory_mb,
            timeout=API_TIMEOUT,
            extra_environment={
                # Read at cold start by lambdas/api/settings.py; a change publishes a new version.
                "MAX_BATCH_APPLICATIONS": str(config.max_batch_applications),
                "DRIFT_WINDOW_APPLICATIONS": str(config.drift_window_applications),
                **(self.model_bundle.environment() if self.model_bundle else {}),
            },
            snap_start=config.api_snap_start,
        )
        # Every registered bundle, not only the configured one: the canary below keeps the previous
        # version serving while it shifts, and that version must still load its own bundle.
        grant_registry_read(model_registry, self.function, reader="The API")
        # Published version behind an alias: the API always calls a fixed, immutable version. A new
        # modelBundleVersion changes the environment, so a deploy publishes a new version for it.
        # With apiProvisionedConcurrency, initialised environments sit behind the alias (apiSnapStart instead
        # resumes new ones from a snapshot of the published version); during a rollout
        # Lambda splits them between the two versions by the alias weights.
        self.alias = lambda_.Alias(
            self,
            "Live",
            alias_name="live",
            version=self.function.current_version,
            provisioned_concurrent_executions=config.api_provisioned_concurrency or None,
        )
        # Before CodeDeploy shifts any traffic, the new version must load its model and score an
        # application when invoked directly (a quiet stack's canary might otherwise see no request).
        self.rollout_check = PreTrafficCheck(
            self,
            "RolloutCheck",
            config=config,
            target=self.function,
            version=self.alias.version,
            target_timeout=API_TIMEOUT,
            logs_key=logs_key,
        )
        # CodeDeploy, not CloudFormation, moves the alias to a new version: canary by default.
        self.rollout = ApiRollout(
            self, "Rollout", config=config, alias=self.alias, pre_traffic_check=self.rollout_check
        )
        # Caller, source IP and request metadata of every call: encrypted like the function's logs.
        # JSON lines (the format below): infra/observability.py counts the 429 answers from the "status" key.
        self.access_logs = encrypted_log_group(
            self, "AccessLogs", key=logs_key, retention=logs.RetentionDays.THREE_MONTHS
        )
        self.api = apigw.RestApi(
            self,
            "Api",
            rest_api_name=f"loan-scoring-{config.environment}",
            description="Loan default scoring",
            # API Gateway's CloudWatch role is one setting per account and region, shared by every API and
            # stack there (the last deploy wins). Retained so destroying this stack never deletes the
            # role another stack's API logs through.
            cloud_watch_role=True,
            cloud_watch_role_removal_policy=RemovalPolicy.RETAIN,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            deploy_options=apigw.StageOptions(
                stage_name=config.environment,
                throttling_rate_limit=THROTTLE_RATE_PER_SECOND,
                throttling_burst_limit=THROTTLE_BURST,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                tracing_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,  # request bodies hold applicant data
                metrics_enabled=True,
            ),
        )
        # A Regional API's default endpoint otherwise accepts TLS 1.0 and 1.1: 1.2 and 1.3 only.
        rest_api = self.api.node.default_child
        assert isinstance(rest_api, apigw.CfnRestApi)
        rest_api.security_policy = MINIMUM_TLS_POLICY
        # API Gateway's own errors (auth, throttling, size, WAF, timeouts) in the function's error format.
        add_error_responses(self.api)
        self.user_pool: cognito.UserPool | None = None
        self.user_pool_client: cognito.UserPoolClient | None = None
        authorization_type, authorizer = self._authorisation(config)
        # Only the deployed stage may invoke the alias: no permission for the console's test invocations,
        # which call the function without the method's authorisation and outside the web ACL.
        integration = apigw.LambdaIntegration(self.alias, allow_test_invoke=False)
        validator = self.api.add_request_validator(
            "Validator", validate_request_body=True, validate_request_parameters=True
        )
        # The stage's routes, shared with the local server (lambdas/api/stage.py): every other path or
        # method gets API Gateway's 403 there and here.
        for route in ROUTES:
            method = self.api.root.resource_for_path(route.path).add_method(
                route.method,
                integration,
                request_validator=validator,
                authorization_type=authorization_type if route.authorised else apigw.AuthorizationType.NONE,
                authorizer=authorizer if route.authorised else None,
            )
            if not route.authorised:  # the health check
                for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                    suppress(method, rule, "Health check is public by design: it reveals no data.")
        if config.auth_mode == "iam":
            suppress(
                self.api,
                "AwsSolutions-COG4",
                "Methods use IAM (SigV4) authorisation; a Cognito authoriser is the authMode=cognito option.",
            )
        if not config.api_firewall:
            for rule in ("AwsSolutions-APIG3", "NIST.800.53.R5-APIGWAssociatedWithWAF"):
                suppress(
                    self.api,
                    rule,
                    "apiFirewall=false: the deployer states that another web ACL (e.g. a central Firewall "
                    "Manager policy) covers this stage; every data method still needs IAM or Cognito auth.",
                )
        suppress(
            self.api,
            "NIST.800.53.R5-APIGWSSLEnabled",
            "SC-8/IA-5 ask for protected, authenticated transmission to the backend. A client certificate "
            "authenticates API Gateway to an HTTP backend; here every method is a Lambda proxy integration, "
            "which API Gateway calls through the Lambda API over TLS with SigV4 (the alias's resource "
            "permissions admit this API's own methods only): no HTTP backend to present a certificate to.",
        )
        suppress(
            self.api,
            "NIST.800.53.R5-APIGWCacheEnabledAndEncrypted",
            "SC-28/AU-9(3) ask that a stage cache be encrypted. No cache is provisioned, so nothing is at "
            "rest to encrypt: scoring responses are per-applicant decisions that must not be cached or "
            "served to another caller. A deployer who adds a cache must encrypt it (cache_data_encrypted).",
        )
        suppress(
            self.api,
            "AwsSolutions-IAM4",
            "API Gateway's account-level CloudWatch role uses the AWS-managed push-to-logs policy.",
            findings=[
                "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
            ],
        )
        suppress(
            role_of(self.function),
            "AwsSolutions-IAM5",
            "X-Ray PutTraceSegments/PutTelemetryRecords do not support resource-level permissions.",
            findings=[ANY_RESOURCE],
        )
        for rule in ("Serverless-LambdaDLQ", "NIST.800.53.R5-LambdaDLQ"):
            suppress(
                self.function,
                rule,
                "API Gateway invokes the function synchronously and the caller receives the error; a "
                "Lambda dead-letter queue only ever receives failed asynchronous invocations.",
            )
        suppress(
            self.function,
            "NIST.800.53.R5-LambdaConcurrency",
            "SC-6 asks for resource availability. The API's load is bounded in front of the function: the "
            f"stage throttle ({THROTTLE_RATE_PER_SECOND} requests/s, burst {THROTTLE_BURST}) and, with "
            "apiFirewall, the web ACL's per-address rate limit; apiProvisionedConcurrency keeps "
            "environments warm. Reserved concurrency would also cap the API and needs 100 unreserved "
            "executions left in the account; "
            "deployers who want the guarantee set reserved_concurrent_executions on it.",
        )

    def _authorisation(self, config: AppConfig) -> tuple[apigw.AuthorizationType, apigw.IAuthorizer | None]:
        if config.auth_mode == "iam":
            return apigw.AuthorizationType.IAM, None
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(sms=False, otp=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_digits=True,
                require_lowercase=True,
                require_uppercase=True,
                require_symbols=True,
            ),
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            # Phone recovery would mean SMS, which this pool does not use (TOTP MFA only).
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            auto_verify=cognito.AutoVerifiedAttrs(email=True),  # recovery needs a verified address
            removal_policy=RemovalPolicy.RETAIN,
        )
        # The authoriser validates ID tokens (no OAuth scopes on the methods), which only the user sign-in
        # flows issue: no client secret (callers are scripts and apps that cannot keep one) and no
        # client-credentials grant (it issues access tokens only). Machine callers use authMode=iam.
        self.user_pool_client = self.user_pool.add_client(
            "ApiClient",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(
                user_srp=True,
                # The AWS CLI cannot compute SRP: scripts sign in with the password (over TLS, still
                # followed by the TOTP challenge) and then renew ID tokens with the refresh token.
                user_password=True,
            ),
            prevent_user_existence_errors=True,
            disable_o_auth=True,  # no hosted UI or OAuth grants: no user pool domain, no redirect URLs
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
        )
        authorizer = apigw.CognitoUserPoolsAuthorizer(self, "Authorizer", cognito_user_pools=[self.user_pool])
        return apigw.AuthorizationType.COGNITO, authorizer
