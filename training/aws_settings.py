"""AWS SDK errors that mean a setting is missing or wrong, said in one line by the command lines."""

from __future__ import annotations

import sys


def aws_setting_error(error: Exception) -> str | None:
    """One line for the AWS SDK's errors that mean a setting is missing or wrong, not a fault."""
    if "botocore" not in sys.modules:
        return None  # the SDK is imported only for s3:// locations and DB_SECRET_ARN
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, NoRegionError

    if isinstance(error, NoCredentialsError):
        return (
            "no AWS credentials found: set AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
            "(for a local S3 emulator: any values, with AWS_ENDPOINT_URL), or run with a role"
        )
    if isinstance(error, NoRegionError):
        return (
            "no AWS region configured: set AWS_REGION or AWS_DEFAULT_REGION (or a region in the AWS profile)"
        )
    if isinstance(error, EndpointConnectionError):
        return f"{error}: check AWS_ENDPOINT_URL (a local S3 emulator must be running there) and the network"
    return None
