"""A Lambda context object for running a handler outside Lambda (local API, local batch, tests)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

LOCAL_ACCOUNT = "000000000000"


@dataclass(frozen=True)
class LocalLambdaContext:
    """The attributes Powertools reads from Lambda's context object, named after ``function_name``."""

    function_name: str
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    memory_limit_in_mb: int = 1024
    remaining_millis: int = 900_000
    function_version: str = "$LATEST"
    log_stream_name: str = "local"

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:local:{LOCAL_ACCOUNT}:function:{self.function_name}"

    @property
    def log_group_name(self) -> str:
        return f"/aws/lambda/{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis
