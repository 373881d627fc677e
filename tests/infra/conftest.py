"""One synthesis per test session: the app is synthesised once (lightweight Lambda assets) and shared."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk.assertions import Template

from app import build_app

Resources = dict[str, dict[str, Any]]


def role_statements(resources: Resources, role: str) -> list[dict[str, Any]]:
    """The statements of every inline policy attached to ``role`` (a logical id), as live references: a
    test may change them to mutate the template."""
    return [
        statement
        for policy in resources.values()
        if policy["Type"] == "AWS::IAM::Policy" and {"Ref": role} in policy["Properties"].get("Roles", [])
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]


@dataclass(frozen=True)
class Synthesised:
    template: Template
    template_json: dict[str, Any]
    template_path: Path
    validation_report: dict[str, Any]


REPO_ROOT = Path(__file__).resolve().parents[2]
# A registry path of the shape <model_name>/<model_version> (an example: synthesis only records it).
REGISTERED_MODEL = "credit_risk-default-risk/credit_risk-4d5ce25fd110"


def synthesise(outdir: Path, **context: object) -> Synthesised:
    """Synthesise with cdk.json's context (feature flags included), lightweight assets and overrides."""
    committed = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    app = cdk.App(context={**committed, "lightweightAssets": True, **context}, outdir=str(outdir))
    stack = build_app(app)
    assembly = app.synth()
    artifact = assembly.get_stack_artifact(stack.artifact_id)
    report_file = outdir / "validation-report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {"pluginReports": []}
    return Synthesised(
        template=Template.from_json(artifact.template),
        template_json=artifact.template,
        template_path=outdir / artifact.template_file,
        validation_report=report,
    )


@pytest.fixture(scope="session")
def synthesised(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    return synthesise(tmp_path_factory.mktemp("cdk-out"))


@pytest.fixture(scope="session")
def synthesised_with_registry_model(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    """The app serving a registered bundle from the artifact bucket (-c modelBundleVersion=...)."""
    return synthesise(tmp_path_factory.mktemp("cdk-out-registry"), modelBundleVersion=REGISTERED_MODEL)


# Every optional feature at once, so one more synthesis covers them all (cdk-nag included); retraining
# only when started by hand is one of them.
OPTIONS: dict[str, object] = {
    "authMode": "cognito",
    "alarmEmail": "ops@example.com",
    "useNatGateway": True,
    "rdsMultiAz": True,
    "dataRemovalPolicy": "snapshot",
    "batchMaxConcurrency": 25,
    "trainingSchedule": "none",
    "apiFirewall": False,
    "apiSnapStart": True,
}


@pytest.fixture(scope="session")
def synthesised_with_options(tmp_path_factory: pytest.TempPathFactory) -> Synthesised:
    """The app with OPTIONS (Cognito, alarm e-mails, NAT gateway, multi-AZ, snapshot removal, no WAF,
    SnapStart, ...)."""
    return synthesise(tmp_path_factory.mktemp("cdk-out-options"), **OPTIONS)


@pytest.fixture(scope="session")
def template(synthesised: Synthesised) -> Template:
    return synthesised.template


@pytest.fixture(scope="session")
def resources(synthesised: Synthesised) -> Resources:
    found: Resources = synthesised.template_json["Resources"]
    return found
