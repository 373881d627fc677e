"""Logging settings that would lose the audit trail, or log applicant values, fail the cold start of both
scoring functions (lambdas/audit.py): a log level above INFO, pretty-printed lines, whole-event logging."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from aws_lambda_powertools import Logger

from lambdas.api import settings as api_settings
from lambdas.api.app import ScoringApi
from lambdas.api.observability import logger as api_logger
from lambdas.api.settings import Settings
from lambdas.api.wiring import make_handler
from lambdas.audit import API_DECISION, LOG_LEVEL_VARIABLES, PRETTY_PRINT_VARIABLE, audit_logging_problem
from lambdas.batch import wiring
from tests.api.conftest import REPO_ROOT, api_context, stored_event
from tests.conftest import captured_log

# (variable, value) pairs under which the audit lines would not reach the trail...
REFUSED = [
    # Lambda's advanced logging controls (ApplicationLogLevel), as Lambda hands them to the function
    ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
    ("AWS_LAMBDA_LOG_LEVEL", "ERROR"),
    ("AWS_LAMBDA_LOG_LEVEL", "FATAL"),
    ("POWERTOOLS_LOG_LEVEL", "WARNING"),
    ("POWERTOOLS_LOG_LEVEL", "warning"),
    ("POWERTOOLS_LOG_LEVEL", "WARN"),
    ("POWERTOOLS_LOG_LEVEL", "ERROR"),
    ("POWERTOOLS_LOG_LEVEL", "CRITICAL"),
    ("POWERTOOLS_LOG_LEVEL", "NOTSET"),
    ("LOG_LEVEL", "WARNING"),
    ("LOG_LEVEL", "error"),
    ("LOG_LEVEL", "CRITICAL"),
    ("LOG_LEVEL", "NOTSET"),
    ("POWERTOOLS_DEV", "true"),
    ("POWERTOOLS_DEV", "1"),
]
# ... and under which they do (INFO and below, TRACE included).
ACCEPTED = [
    ("AWS_LAMBDA_LOG_LEVEL", "TRACE"),
    ("AWS_LAMBDA_LOG_LEVEL", "DEBUG"),
    ("AWS_LAMBDA_LOG_LEVEL", "INFO"),
    ("POWERTOOLS_LOG_LEVEL", "DEBUG"),
    ("POWERTOOLS_LOG_LEVEL", "info"),
    ("POWERTOOLS_LOG_LEVEL", "INFO"),
    ("LOG_LEVEL", "DEBUG"),
    ("LOG_LEVEL", "INFO"),
    ("POWERTOOLS_DEV", "false"),
]


def _api_check(env: dict[str, str]) -> None:
    Settings.from_env(env)


# Each function's cold-start check of its environment, and the error it raises.
CHECKS: dict[str, tuple[Callable[[dict[str, str]], None], type[Exception]]] = {
    "api": (_api_check, api_settings.SettingsError),
    "batch": (wiring.check_audit_logging, wiring.SettingsError),
}


@pytest.mark.parametrize("function", CHECKS)
@pytest.mark.parametrize(("name", "value"), REFUSED)
def test_given_a_setting_that_loses_the_audit_trail_when_settings_load_then_it_is_refused_by_name_and_value(
    function: str, name: str, value: str
) -> None:
    check, error = CHECKS[function]
    with pytest.raises(error, match=rf"^{name} must be .*, got {value!r}: "):
        check({name: value})


@pytest.mark.parametrize("function", CHECKS)
@pytest.mark.parametrize(("name", "value"), ACCEPTED)
def test_given_a_setting_that_keeps_info_when_settings_load_then_it_is_accepted(
    function: str, name: str, value: str
) -> None:
    check, _ = CHECKS[function]
    check({name: value})  # no error


def _lines_the_trail_would_see(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a Powertools Logger created under ``env`` writes for one audit line, split into the events
    CloudWatch Logs would store (one per line of output). The root logger is where Lambda's Python
    runtime leaves it: at the ApplicationLogLevel (TRACE as DEBUG), else at Python's WARNING."""
    for name in (*LOG_LEVEL_VARIABLES, PRETTY_PRINT_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    lambda_level = env.get("AWS_LAMBDA_LOG_LEVEL")
    root = logging.getLogger()
    previous = root.level
    root.setLevel({"TRACE": "DEBUG"}.get(lambda_level, lambda_level) if lambda_level else logging.WARNING)
    buffer = io.StringIO()
    try:
        # A new service name each time: Powertools configures a logger of a known name only once.
        Logger(service=f"audit-level-{uuid.uuid4().hex}", stream=buffer).info(API_DECISION)
    finally:
        root.setLevel(previous)
    return buffer.getvalue().splitlines()


def _is_audit_record(line: str) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    return isinstance(record, dict) and record.get("message") == API_DECISION


@pytest.mark.filterwarnings("ignore:POWERTOOLS_DEV environment variable is enabled")
@pytest.mark.parametrize(("name", "value"), REFUSED + ACCEPTED)
def test_given_each_setting_when_an_audit_line_is_logged_then_it_is_refused_exactly_when_the_line_is_lost(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a setting, When Powertools logs an audit line under it
    lines = _lines_the_trail_would_see({name: value}, monkeypatch)
    # Then the subscription filter finds it as one JSON line exactly when the rule accepts the setting
    reaches_trail = any(_is_audit_record(line) for line in lines)
    assert reaches_trail is (audit_logging_problem({name: value}) is None), lines
    assert reaches_trail is ((name, value) in ACCEPTED), lines


# ---- whole-event logging (the API's events hold the applicants' values) ------------------------------


@pytest.mark.parametrize("applicant_values", ["false", "true"])
@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", ""])
def test_given_event_logging_when_api_settings_load_then_it_is_refused(
    value: str, applicant_values: str
) -> None:
    env = {"POWERTOOLS_LOGGER_LOG_EVENT": value, "LOG_APPLICANT_VALUES": applicant_values}
    with pytest.raises(
        api_settings.SettingsError, match=rf"^POWERTOOLS_LOGGER_LOG_EVENT must be false .*, got {value!r}: "
    ):
        Settings.from_env(env)


@pytest.mark.parametrize("value", ["false", "FALSE", "0", "no", "off"])
def test_given_event_logging_off_when_api_settings_load_then_it_is_accepted(value: str) -> None:
    assert Settings.from_env({"POWERTOOLS_LOGGER_LOG_EVENT": value}).log_applicant_values is False


def test_given_event_logging_on_when_the_api_handles_a_request_then_powertools_logs_the_applicants_values(
    scoring_api: ScoringApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Why it is refused: Powertools reads the variable when the handler is decorated, then logs each
    # event whole, its body included (score.json's applicant has an income of 32000.0).
    event = stored_event("score.json")
    assert "32000.0" in event["body"]
    logged: dict[str, str] = {}
    for setting in ("false", "true"):
        monkeypatch.setenv("POWERTOOLS_LOGGER_LOG_EVENT", setting)
        handler = make_handler(scoring_api)
        with captured_log(api_logger) as buffer:
            handler(stored_event("score.json"), api_context())  # type: ignore[arg-type]
        logged[setting] = buffer.getvalue()
    assert "32000.0" not in logged["false"]
    assert "32000.0" in logged["true"]


# ---- the cold start of each function -------------------------------------------------------------


def _cold_start(module: str, bundle: Path, level: str) -> subprocess.CompletedProcess[str]:
    """Import a function's entry module in a fresh process, as Lambda's init phase does."""
    env = {
        "PATH": "/usr/bin:/bin",
        "MODEL_BUNDLE_DIR": str(bundle),
        "AWS_DEFAULT_REGION": "us-east-1",  # the batch function creates its S3 client at init
        "AWS_LAMBDA_LOG_LEVEL": level,
    }
    return subprocess.run(
        [sys.executable, "-c", f"import {module}"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("module", ["lambdas.api.handler", "lambdas.batch.handler"])
def test_given_application_log_level_warn_when_a_function_starts_then_the_cold_start_fails_naming_it(
    module: str, api_bundle: Path
) -> None:
    # Given ApplicationLogLevel WARN (Lambda sets AWS_LAMBDA_LOG_LEVEL=WARN), When the function starts
    started = _cold_start(module, api_bundle, "WARN")
    # Then its init fails with one clear message, instead of scoring with no audit trail
    assert started.returncode != 0
    assert (
        "SettingsError: AWS_LAMBDA_LOG_LEVEL must be one of TRACE, DEBUG, INFO (or unset), got 'WARN'"
        in started.stderr
    ), started.stderr[-3000:]
    # And the same function starts at INFO: nothing else in its environment is wrong
    assert _cold_start(module, api_bundle, "INFO").returncode == 0
