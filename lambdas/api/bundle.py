"""Where the model comes from: the deployment package's folder, or S3 for a retrained model."""

from __future__ import annotations

from lambdas.api.settings import Settings
from lambdas.model_source import load_model_from_s3
from lambdas.scoring.runtime import ScoringModel


def load_model(settings: Settings) -> ScoringModel:
    """Load the bundle once per execution environment; raises ModelBundleError with a clear message."""
    if settings.model_bundle_uri is None:
        return ScoringModel.load_directory(settings.model_bundle_dir)
    import boto3  # only when configured: boto3 costs ~0.2 s of cold start

    return load_model_from_s3(
        boto3.client("s3"),
        settings.model_bundle_uri,
        threads=1,
        # The deployed version: the card in the bucket must name it (None in local runs: no check).
        expected_version=settings.model_bundle_version,
    )
