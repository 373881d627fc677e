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
from infra.lambda_package import LambdaFunction, build_lambda_package
from tests.isolated_python import run_isolated_python312

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


def check_tool_package(
    function: LambdaFunction, modules: list[str], stdlib_module: str, tmp_path: Path
) -> None:
    """A tool function's package (the rollout check, the snapshot sweeper) holds ``lambdas/__init__.py``
    and its own ``modules`` only, compiled for CPython 3.12, under 1 MiB (no wheels, no model); and
    ``stdlib_module`` (its logic: boto3, which only handler.py imports, comes with Lambda's runtime)
    imports from the package alone on a bare Python 3.12."""
    package = tmp_path / function
    report = build_lambda_package(function, package)
    files = sorted(
        p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file() and p.suffix == ".py"
    )
    assert files == ["lambdas/__init__.py", *(f"lambdas/{function}/{name}.py" for name in modules)]
    assert report.unzipped_bytes < 1024 * 1024
    assert (package / "lambdas" / function / "__pycache__" / "handler.cpython-312.pyc").is_file()
    probe = (
        "import json, sys; sys.path[:0] = [sys.argv[1]]; "
        f"import lambdas.{function}.{stdlib_module} as probed; "
        "print('RESULT ' + json.dumps({'file': probed.__file__}))"
    )
    loaded_from = run_isolated_python312(probe, [str(package)], env={}, cwd=tmp_path)
    assert Path(loaded_from["file"]).is_relative_to(package)


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
