"""Offline proof: the cdk-nag AwsSolutions and Serverless packs have zero unacknowledged findings and
cfn-lint is clean."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.infra.conftest import Synthesised


def _violations(synthesised: Synthesised, plugin: str) -> list[str]:
    found = []
    for report in synthesised.validation_report["pluginReports"]:
        if report["pluginName"] == plugin:
            for violation in report.get("violations", []):
                paths = [c["constructPath"] for c in violation["violatingConstructs"]]
                found.append(f"{violation['ruleName']}: {paths}")
    return found


def test_given_the_default_app_when_synthesised_then_cdk_nag_reports_nothing(
    synthesised: Synthesised,
) -> None:
    plugins = [report["pluginName"] for report in synthesised.validation_report["pluginReports"]]
    assert {"AwsSolutions", "Serverless"} <= set(plugins)  # the checks really ran
    assert _violations(synthesised, "AwsSolutions") == []
    assert _violations(synthesised, "Serverless") == []


def test_given_every_option_when_synthesised_then_cdk_nag_reports_nothing(
    synthesised_with_options: Synthesised,
) -> None:
    # Given Cognito, alarm e-mails, the NAT gateway, multi-AZ RDS and snapshot removal at once
    variant = synthesised_with_options
    plugins = [report["pluginName"] for report in variant.validation_report["pluginReports"]]
    assert {"AwsSolutions", "Serverless"} <= set(plugins)
    assert _violations(variant, "AwsSolutions") == []
    assert _violations(variant, "Serverless") == []
    variant.template.resource_count_is("AWS::Cognito::UserPool", 1)
    variant.template.resource_count_is("AWS::SNS::Subscription", 1)
    variant.template.resource_count_is("AWS::EC2::NatGateway", 1)


# W3005 ("dependency already enforced by GetAtt") flags the explicit DependsOn that CDK itself emits
# next to role references; it is harmless and not controllable from the app. Everything else counts.
CFN_LINT_IGNORED = "W3005"


def test_given_the_synthesised_template_when_cfn_lint_runs_then_it_is_clean(synthesised: Synthesised) -> None:
    _assert_cfn_lint_clean(synthesised)


def test_given_every_option_when_cfn_lint_runs_then_it_is_clean(
    synthesised_with_options: Synthesised,
) -> None:
    _assert_cfn_lint_clean(synthesised_with_options)


def _assert_cfn_lint_clean(synthesised: Synthesised) -> None:
    cfn_lint = str(Path(sys.executable).parent / "cfn-lint")
    completed = subprocess.run(
        [
            cfn_lint,
            "--format",
            "parseable",
            "--ignore-checks",
            CFN_LINT_IGNORED,
            "--",
            str(synthesised.template_path),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
