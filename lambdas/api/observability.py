"""Powertools Logger, Metrics and Tracer: created once here, imported by the handler modules.

Tracing: Powertools' Tracer loads the X-Ray SDK when it is constructed, even when tracing is off. When
tracing is off (outside Lambda, or POWERTOOLS_TRACE_DISABLED) the Tracer gets a no-op provider instead,
so local runs, tests and the benchmark do not pay for an SDK they never use. In Lambda with active
tracing the real X-Ray provider is used, without patching any library (see ``_build_tracer``).
"""

from __future__ import annotations

import os
from collections.abc import Generator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from typing import Any

from aws_lambda_powertools import Logger, Metrics, Tracer
from aws_lambda_powertools.tracing.base import BaseProvider, BaseSegment

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "loan-scoring-api")
NAMESPACE = os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "LoanScoring")
# What Powertools' strtobool reads as true (after lower-casing).
_TRUTHY = frozenset({"1", "y", "yes", "t", "true", "on"})


def tracing_disabled(env: Mapping[str, str]) -> bool:
    """Powertools' own rule (``Tracer._is_tracer_disabled``): off when asked, outside Lambda (no
    ``LAMBDA_TASK_ROOT``), or under SAM CLI / Chalice local (a variable counts when it holds a value)."""
    if env.get("POWERTOOLS_TRACE_DISABLED", "false").strip().lower() in _TRUTHY:
        return True
    return (
        not env.get("LAMBDA_TASK_ROOT")
        or bool(env.get("AWS_SAM_LOCAL"))
        or bool(env.get("AWS_CHALICE_CLI_MODE"))
    )


class _NoOpSegment(BaseSegment):
    def close(self, end_time: int | None = None) -> None:
        return None

    def add_subsegment(self, subsegment: Any) -> None:
        return None

    def remove_subsegment(self, subsegment: Any) -> None:
        return None

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def add_exception(self, exception: BaseException, stack: Any, remote: bool = False) -> None:
        return None


class NoOpTracingProvider(BaseProvider):
    """Stands in for the X-Ray recorder when tracing is off."""

    @contextmanager
    def in_subsegment(self, name: Any = None, **kwargs: Any) -> Generator[BaseSegment, None, None]:
        yield _NoOpSegment()

    def in_subsegment_async(
        self, name: Any = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[BaseSegment]:
        @asynccontextmanager
        async def segment() -> Any:
            yield _NoOpSegment()

        return segment()  # type: ignore[no-any-return]

    def put_annotation(self, key: str, value: Any) -> None:
        return None

    def put_metadata(self, key: str, value: Any, namespace: str = "default") -> None:
        return None

    def patch(self, modules: Sequence[str]) -> None:
        return None

    def patch_all(self) -> None:
        return None


def _build_tracer() -> Tracer:
    if tracing_disabled(os.environ):
        return Tracer(service=SERVICE, disabled=True, provider=NoOpTracingProvider())
    # No library patching: by default the Tracer patches every library the X-Ray SDK supports (botocore,
    # requests, pymysql, ...), importing each one it finds, which cost ~0.2 s of CPU per cold start in the
    # benchmark. This function calls no other service while it serves requests (a bundle in S3 is fetched
    # in the init phase, outside any invocation's trace), so there is nothing to patch.
    return Tracer(service=SERVICE, auto_patch=False)


logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)
tracer = _build_tracer()
