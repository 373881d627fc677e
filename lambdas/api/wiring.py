"""The Lambda handler around a ScoringApi: Powertools decorators in one fixed order."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext

from lambdas.api.app import ScoringApi, create_api
from lambdas.api.bundle import load_model
from lambdas.api.observability import logger, metrics, tracer
from lambdas.api.settings import Settings

LambdaHandler = Callable[[Mapping[str, Any], LambdaContext], dict[str, Any]]


def make_handler(api: ScoringApi) -> LambdaHandler:
    """The handler for one API; decorators in a fixed order: logger outermost, then tracer, metrics."""

    @logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True)
    @tracer.capture_lambda_handler(capture_response=False)  # scores stay out of trace metadata
    @metrics.log_metrics(capture_cold_start_metric=True)
    def handle(event: Mapping[str, Any], context: LambdaContext) -> dict[str, Any]:
        # The Lambda version that answered, on every line the audit trail keeps: during a rollout the
        # alias's two versions can serve the same model_version, and function_arn names the alias.
        logger.append_keys(function_version=context.function_version)
        tracer.put_annotation(key="model_version", value=api.model.model_version)
        return api.handle(event, context)

    wrapped: LambdaHandler = handle
    return wrapped


def create_handler(env: Mapping[str, str]) -> LambdaHandler:
    settings = Settings.from_env(env)
    return make_handler(create_api(load_model(settings), settings))
