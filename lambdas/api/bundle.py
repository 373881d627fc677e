"""Where the model comes from: the deployment package's folder, or S3 for a retrained model."""

from __future__ import annotations

from lambdas.api.settings import S3Location, Settings
from lambdas.scoring.card import ModelCard
from lambdas.scoring.runtime import CARD_FILE, ScoringModel


def load_model(settings: Settings) -> ScoringModel:
    """Load the bundle once per execution environment; raises ModelBundleError with a clear message."""
    if settings.model_bundle_uri is None:
        return ScoringModel.load_directory(settings.model_bundle_dir)
    return _load_from_s3(settings.model_bundle_uri)


def _load_from_s3(location: S3Location) -> ScoringModel:
    import boto3  # only when configured: boto3 costs ~0.2 s of cold start

    s3 = boto3.client("s3")
    card_key = f"{location.prefix}{CARD_FILE}"
    card_json = s3.get_object(Bucket=location.bucket, Key=card_key)["Body"].read()
    # The card names the ONNX file; read it from the card before fetching the model.
    onnx_file = ModelCard.model_validate_json(card_json).onnx.file
    onnx_bytes = s3.get_object(Bucket=location.bucket, Key=f"{location.prefix}{onnx_file}")["Body"].read()
    return ScoringModel.from_bytes(onnx_bytes, card_json, source=f"s3://{location.bucket}/{location.prefix}")
