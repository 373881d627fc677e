#!/usr/bin/env python3
"""CDK app entry: cdk.json context -> AppConfig -> the loan scoring stack, checked by cdk-nag."""

from __future__ import annotations

import sys

import aws_cdk as cdk
from cdk_nag import AwsSolutionsChecks, NIST80053R5Checks, ServerlessChecks

from infra.config import ConfigError, config_from_context
from infra.stack import LoanScoringStack


def build_app(app: cdk.App) -> LoanScoringStack:
    # All of the context, not only the known keys: a misspelt key (-c batchMaxConcurency=2) is then
    # refused by config_from_context instead of silently leaving the default in place.
    context = app.node.get_all_context()
    config = config_from_context({key: value for key, value in context.items() if value is not None})
    stack = LoanScoringStack(
        app,
        config.stack_prefix,
        config=config,
        description="Serverless loan-default scoring: RDS, training pipeline, scoring API and batch scoring",
    )
    cdk.Tags.of(stack).add("project", "loan-scoring")
    cdk.Tags.of(stack).add("environment", config.environment)
    # cdk-nag v3 packs are policy-validation plugins: unacknowledged findings fail synthesis. Serverless
    # checks what AwsSolutions does not for Lambda, SQS, EventBridge and API Gateway (DLQs, tracing, ...);
    # NIST 800-53 Rev 5 is the control set regulated (bank) platform teams ask for (docs/deploy.md).
    cdk.Validations.of(app).add_plugins(
        AwsSolutionsChecks(app), ServerlessChecks(app), NIST80053R5Checks(app)
    )
    return stack


def main() -> int:
    cdk_app = cdk.App()
    try:
        build_app(cdk_app)
    except ConfigError as error:  # a bad -c value or cdk.json entry: its message says which and why
        print(f"error: {error}", file=sys.stderr)
        return 1
    cdk_app.synth()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
