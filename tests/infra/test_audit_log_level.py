"""The stack never gives a scoring function a logging setting that would lose the audit trail: no
ApplicationLogLevel (Lambda's advanced logging controls), no log level, pretty-printing or event-logging
variable; and scoring_function refuses one at synth, as the cold start would (lambdas/audit.py)."""

from __future__ import annotations

from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import Duration
from aws_cdk import aws_kms as kms

from infra.config import AppConfig
from infra.scoring_functions import scoring_function
from lambdas.api.settings import LOG_EVENT_VARIABLE
from lambdas.audit import LOG_LEVEL_VARIABLES, PRETTY_PRINT_VARIABLE
from tests.infra.conftest import Resources

_SCORING_HANDLERS = ("lambdas.api.handler.handler", "lambdas.batch.handler.handler")
_LOGGING_VARIABLES = {*LOG_LEVEL_VARIABLES, PRETTY_PRINT_VARIABLE, LOG_EVENT_VARIABLE}


def _function(resources: Resources, handler: str) -> dict[str, Any]:
    (function,) = (
        r["Properties"]
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    )
    found: dict[str, Any] = function
    return found


@pytest.mark.parametrize("handler", _SCORING_HANDLERS)
def test_given_the_app_when_synthesised_then_no_scoring_function_has_a_log_level_setting(
    resources: Resources, handler: str
) -> None:
    function = _function(resources, handler)
    # Lambda would drop the INFO audit lines below an ApplicationLogLevel of WARN or above: none is set
    # (the log group is the only logging setting), so Lambda sets no AWS_LAMBDA_LOG_LEVEL either.
    assert set(function["LoggingConfig"]) == {"LogGroup"}
    # Nor does any variable change Powertools' level, its line format or what it logs.
    assert not _LOGGING_VARIABLES & set(function["Environment"]["Variables"])


@pytest.mark.parametrize(
    ("name", "value"),
    [("AWS_LAMBDA_LOG_LEVEL", "WARN"), ("POWERTOOLS_LOG_LEVEL", "ERROR"), ("LOG_LEVEL", "WARNING")],
)
def test_given_an_environment_above_info_when_a_scoring_function_is_defined_then_the_synth_fails_naming_it(
    name: str, value: str
) -> None:
    stack = cdk.Stack(cdk.App())
    with pytest.raises(ValueError, match=rf"^ScoringFunction: {name} must be .*, got {value!r}"):
        scoring_function(
            stack,
            "ScoringFunction",
            config=AppConfig(lightweight_assets=True),
            function="api",
            logs_key=kms.Key(stack, "Key"),
            memory_mb=1024,
            timeout=Duration.seconds(29),
            extra_environment={name: value},
        )
