"""maxBatchApplications, driftWindowApplications and batchOnnxThreads: cdk.json context -> AppConfig -> the
API and batch functions' environment, within exactly the bounds the functions themselves apply."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from infra.config import (
    BATCH_ONNX_THREADS_MIN,
    MAX_BATCH_APPLICATIONS_RANGE,
    MIN_DRIFT_WINDOW_APPLICATIONS,
    AppConfig,
    ConfigError,
    config_from_context,
)
from lambdas.api.app import create_api
from lambdas.api.settings import (
    DEFAULT_DRIFT_WINDOW_APPLICATIONS,
    DEFAULT_MAX_BATCH_APPLICATIONS,
    MAX_BATCH_APPLICATIONS_LIMIT,
    Settings,
    SettingsError,
)
from lambdas.api.wiring import make_handler
from lambdas.batch import wiring
from lambdas.local_context import LocalLambdaContext
from lambdas.scoring.drift import MIN_ROWS_FOR_VERDICT
from lambdas.scoring.runtime import ScoringModel
from tests.infra.conftest import REPO_ROOT, Resources, Synthesised, synthesise

_API_HANDLER = "lambdas.api.handler.handler"
_BATCH_HANDLER = "lambdas.batch.handler.handler"
# context key -> (AppConfig field, environment variable, the function that reads it)
_KEYS = {
    "maxBatchApplications": ("max_batch_applications", "MAX_BATCH_APPLICATIONS", _API_HANDLER),
    "driftWindowApplications": ("drift_window_applications", "DRIFT_WINDOW_APPLICATIONS", _API_HANDLER),
    "batchOnnxThreads": ("batch_onnx_threads", "BATCH_ONNX_THREADS", _BATCH_HANDLER),
}
# Not the defaults, each one: a larger batch maximum, drift measurement off, two onnxruntime threads.
CHOSEN: dict[str, int] = {"maxBatchApplications": 250, "driftWindowApplications": 0, "batchOnnxThreads": 2}


def _configured(key: str, value: object) -> int | None:
    """The value AppConfig holds for ``key`` set to ``value``, or None when synthesis refuses it."""
    try:
        config = config_from_context({key: value})
    except ConfigError:
        return None
    configured: int = getattr(config, _KEYS[key][0])
    return configured


def _api_reads(variable: str, raw: str) -> Settings | None:
    """The API function's settings with ``variable`` set to ``raw``; None if its cold start refuses it."""
    try:
        return Settings.from_env({variable: raw})
    except SettingsError:
        return None


class _ThreadsRecorder:
    """Stands in for ScoringModel in lambdas.batch.wiring: records the threads the model is loaded with."""

    def __init__(self) -> None:
        self.threads: list[int] = []

    def load_directory(self, path: Path, *, threads: int = 1) -> object:
        self.threads.append(threads)
        return object()


BatchThreads = Callable[[Mapping[str, str]], int | None]


@pytest.fixture
def batch_threads(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchThreads]:
    """The onnxruntime threads the batch function's cold start loads its model with under an environment
    (the packaged bundle), or None when it refuses that environment."""

    def load(env: Mapping[str, str]) -> int | None:
        for name in ("MODEL_BUNDLE_URI", "MODEL_BUNDLE_VERSION", "BATCH_ONNX_THREADS"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("MODEL_BUNDLE_DIR", str(REPO_ROOT / "model_artifacts" / "credit_risk"))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        recorder = _ThreadsRecorder()
        monkeypatch.setattr(wiring, "ScoringModel", recorder)
        wiring.loaded_model.cache_clear()
        try:
            wiring.loaded_model()
        except wiring.SettingsError:
            return None
        finally:
            wiring.loaded_model.cache_clear()
        (threads,) = recorder.threads
        return threads

    yield load
    wiring.loaded_model.cache_clear()


def _around(*bounds: int) -> list[int]:
    """Each bound, one below and one above, plus far outside values."""
    return sorted({value + step for value in bounds for step in (-1, 0, 1)} | {-1000, 10**6})


# ---- defaults -------------------------------------------------------------------------------------


def test_given_no_context_then_each_key_keeps_what_the_functions_do_when_the_variable_is_unset(
    batch_threads: BatchThreads,
) -> None:
    config = config_from_context({})
    unset = Settings.from_env({})
    assert config.max_batch_applications == unset.max_batch_applications == DEFAULT_MAX_BATCH_APPLICATIONS
    assert config.drift_window_applications == unset.drift_window_applications
    assert config.drift_window_applications == DEFAULT_DRIFT_WINDOW_APPLICATIONS
    assert config.batch_onnx_threads == batch_threads({}) == 1


def test_given_the_committed_cdk_json_then_it_sets_each_key_to_its_default() -> None:
    committed = json.loads((REPO_ROOT / "cdk.json").read_text())["context"]
    defaults = AppConfig()
    assert {key: committed.get(key) for key in _KEYS} == {
        key: getattr(defaults, field) for key, (field, _, _) in _KEYS.items()
    }


def test_given_cli_strings_then_they_are_coerced() -> None:
    # Given: `cdk deploy -c maxBatchApplications=250 -c driftWindowApplications=0 -c batchOnnxThreads=2`
    config = config_from_context({key: str(value) for key, value in CHOSEN.items()})
    # Then
    assert (config.max_batch_applications, config.drift_window_applications, config.batch_onnx_threads) == (
        250,
        0,
        2,
    )


# ---- bounds and errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("maxBatchApplications", 0, "from 1 to 1000"),
        ("maxBatchApplications", 1001, "from 1 to 1000"),
        ("maxBatchApplications", "many", "expected int"),
        ("maxBatchApplications", True, "expected an integer"),
        ("driftWindowApplications", 499, "0 (off) or at least 500"),
        ("driftWindowApplications", 1, "0 (off) or at least 500"),
        ("driftWindowApplications", -1, "0 (off) or at least 500"),
        ("driftWindowApplications", 1000.5, "expected int"),
        ("batchOnnxThreads", 0, "at least 1"),
        ("batchOnnxThreads", -2, "at least 1"),
        ("batchOnnxThreads", "auto", "expected int"),
    ],
)
def test_given_a_bad_value_then_synthesis_fails_naming_the_key_the_value_and_the_bounds(
    key: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigError) as error:
        config_from_context({key: value})
    message = str(error.value)
    assert repr(key) in message
    assert repr(value) in message
    assert expected in message


@pytest.mark.parametrize("key", ["maxBatchApplications", "driftWindowApplications"])
def test_given_values_around_every_bound_then_config_takes_exactly_what_the_api_function_takes(
    key: str,
) -> None:
    field, variable, _ = _KEYS[key]
    values = _around(
        *MAX_BATCH_APPLICATIONS_RANGE,
        MAX_BATCH_APPLICATIONS_LIMIT,
        MIN_DRIFT_WINDOW_APPLICATIONS,
        MIN_ROWS_FOR_VERDICT,
        0,
    )
    for value in values:
        settings = _api_reads(variable, str(value))
        read_by_function = None if settings is None else getattr(settings, field)
        assert _configured(key, value) == read_by_function, f"{key}={value}"


def test_given_values_around_the_bound_then_config_takes_exactly_the_threads_the_batch_function_takes(
    batch_threads: BatchThreads,
) -> None:
    for value in _around(BATCH_ONNX_THREADS_MIN, 0, 1):
        loaded_with = batch_threads({"BATCH_ONNX_THREADS": str(value)})
        assert _configured("batchOnnxThreads", value) == loaded_with, f"batchOnnxThreads={value}"


# ---- synthesised ----------------------------------------------------------------------------------


def _environment(resources: Resources, handler: str) -> dict[str, str]:
    (function,) = [
        r
        for r in resources.values()
        if r["Type"] == "AWS::Lambda::Function" and r["Properties"]["Handler"] == handler
    ]
    variables: dict[str, str] = function["Properties"]["Environment"]["Variables"]
    return variables


def _live_version(resources: Resources) -> str:
    """The logical id of the Lambda version the API's live alias serves."""
    (alias,) = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Alias"]
    version: str = alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0]
    return version


@pytest.fixture(scope="module")
def chosen(tmp_path_factory: pytest.TempPathFactory) -> Resources:
    synthesised: Synthesised = synthesise(tmp_path_factory.mktemp("cdk-out-settings"), **CHOSEN)
    found: Resources = synthesised.template_json["Resources"]
    return found


def test_given_chosen_values_when_synthesised_then_each_function_carries_its_own_variables(
    chosen: Resources,
) -> None:
    for key, (_, variable, handler) in _KEYS.items():
        assert _environment(chosen, handler)[variable] == str(CHOSEN[key]), key
        other = _BATCH_HANDLER if handler == _API_HANDLER else _API_HANDLER
        assert variable not in _environment(chosen, other), f"{variable} is not read by {other}"


def test_given_the_default_context_when_synthesised_then_the_functions_get_the_defaults_explicitly(
    resources: Resources,
) -> None:
    defaults = AppConfig()
    for field, variable, handler in _KEYS.values():
        assert _environment(resources, handler)[variable] == str(getattr(defaults, field))


def test_given_another_batch_maximum_when_synthesised_then_the_api_alias_moves_to_a_new_version(
    resources: Resources, chosen: Resources
) -> None:
    # The alias serves a published version: a new environment on an unchanged version would never be served.
    assert _live_version(chosen) != _live_version(resources)


def test_given_the_synthesised_api_environment_then_the_api_documents_and_reports_that_maximum(
    chosen: Resources,
) -> None:
    # Given: the API function's cold start on the environment the stack gives it
    settings = Settings.from_env(_environment(chosen, _API_HANDLER))
    handler = make_handler(create_api(ScoringModel.load_directory(settings.model_bundle_dir), settings))
    context = LocalLambdaContext("loan-scoring-api")
    answers = {}
    for route in ("model", "openapi"):
        event = json.loads((REPO_ROOT / "tests" / "events" / f"{route}.json").read_text())
        result = handler(event, context)  # type: ignore[arg-type]
        assert result["statusCode"] == 200
        answers[route] = json.loads(result["body"])
    # Then: GET /v1/model and the OpenAPI document state maxBatchApplications, and drift is off
    assert answers["model"]["max_batch_applications"] == CHOSEN["maxBatchApplications"]
    request = answers["openapi"]["components"]["schemas"]["BatchScoreRequest"]
    assert request["properties"]["applications"]["maxItems"] == CHOSEN["maxBatchApplications"]
    assert settings.drift_window_applications == 0


def test_given_the_synthesised_batch_environment_then_the_model_is_loaded_with_that_many_threads(
    chosen: Resources, batch_threads: BatchThreads
) -> None:
    threads = _environment(chosen, _BATCH_HANDLER)["BATCH_ONNX_THREADS"]
    assert batch_threads({"BATCH_ONNX_THREADS": threads}) == CHOSEN["batchOnnxThreads"]
