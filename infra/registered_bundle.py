"""A registered model version (``modelBundleVersion``) served from the artifact bucket's registry.

The API and the batch Lambda take the same one, so both decide with the same model: each gets
``MODEL_BUNDLE_URI`` pointing at the version's folder and ``MODEL_BUNDLE_VERSION``, the version the
card found there must name (the Lambdas do not trust the bucket: an out-of-band overwrite of the folder
fails their cold start instead of serving another model). The batch function reads exactly that
folder's objects; the API reads the registry's model bundles (see :func:`grant_registry_read` for why).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3

from infra.buckets import grant_read_under
from infra.config import AppConfig
from infra.execution_roles import role_of
from infra.nag import S3_OBJECT_READ_ACTIONS, bucket_objects, suppress
from infra.training_pipeline import REGISTRY_PREFIX


@dataclass(frozen=True)
class RegisteredBundle:
    registry: s3.IBucket  # the training pipeline's artifact bucket
    key_prefix: str  # models/<model_name>/<model_version>/
    model_version: str  # <model_version>: the card found under key_prefix must name it

    @classmethod
    def of(cls, config: AppConfig, registry: s3.IBucket) -> RegisteredBundle | None:
        """The configured version, or None when the Lambdas serve their packaged bundle."""
        if not config.model_bundle_version or not config.registered_model_version:
            return None
        return cls(
            registry=registry,
            key_prefix=f"{REGISTRY_PREFIX}{config.model_bundle_version}/",
            model_version=config.registered_model_version,
        )

    def environment(self) -> dict[str, str]:
        # Training names a version after its ONNX file's sha256 (<dataset>-<12 hex>), so the version
        # pins the model too (lambdas/model_source.py checks both at cold start): nothing else is needed.
        return {
            "MODEL_BUNDLE_URI": f"s3://{self.registry.bucket_name}/{self.key_prefix}",
            "MODEL_BUNDLE_VERSION": self.model_version,
        }

    def grant_read(self, function: lambda_.Function, *, reader: str) -> None:
        """Read on exactly this version's objects (plus kms:Decrypt on the bucket's key), acknowledged."""
        objects = self.key_prefix + "*"
        grant_read_under(self.registry, function, objects, probes_missing_keys=False)
        suppress(
            role_of(function),
            "AwsSolutions-IAM5",
            f"{reader} loads the registered model bundle it is configured with (modelBundleVersion): "
            f"read is limited to that one immutable version's objects ({objects}) in the artifact "
            "bucket (s3:GetObject*; listing limited to the same prefix).",
            findings=[*S3_OBJECT_READ_ACTIONS, bucket_objects(self.registry, objects)],
        )


def grant_registry_read(registry: s3.IBucket, function: lambda_.Function, *, reader: str) -> None:
    """Read on every registered model bundle (``models/*``), whatever version is configured.

    The API's alias moves to a new version gradually (CodeDeploy canary), and CloudFormation updates
    the role before the shift starts: with read on the configured version only, new execution
    environments of the version still serving most traffic could no longer load their bundle, and
    a deploy moving off a registered version would fail and roll back. Registered bundles are
    immutable model files (ONNX + card, hash-checked at load), never applicant data; nothing is
    writable.
    """
    objects = REGISTRY_PREFIX + "*"
    grant_read_under(registry, function, objects, probes_missing_keys=False)
    suppress(
        role_of(function),
        "AwsSolutions-IAM5",
        f"{reader} loads registered model bundles ({objects} in the artifact bucket: immutable ONNX files "
        "and model cards, no applicant data; s3:GetObject*, listing limited to models/): during a canary "
        "rollout both the previous and the new Lambda version must load the version they serve.",
        findings=[*S3_OBJECT_READ_ACTIONS, bucket_objects(registry, objects)],
    )
