"""Lambda code assets built without Docker: CDK calls ``LocalPackageBundling`` instead of a container."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

from infra.config import AppConfig
from infra.lambda_package import REPO_ROOT, LambdaFunction, build_lambda_package
from infra.lightweight_assets import lightweight_asset_dir


@jsii.implements(ILocalBundling)
class LocalPackageBundling:
    """Builds the function's package with ``infra.lambda_package`` on the synthesising machine."""

    def __init__(self, function: LambdaFunction, arch: str, model_bundle_dir: str) -> None:
        self._function = function
        self._arch = arch
        self._model_bundle_dir = model_bundle_dir

    # jsii passes the BundlingOptions struct as one positional argument; it is not needed here.
    def try_bundle(self, output_dir: str, *_options: Any, **_keyword_options: Any) -> bool:
        build_lambda_package(
            self._function, Path(output_dir), self._arch, model_bundle_dir=self._model_bundle_dir
        )
        return True


def lambda_architecture(config: AppConfig) -> lambda_.Architecture:
    """The architecture of every function the stack packages. onnxruntime's arm64 wheels have been
    reported to fail on Lambda's Graviton CPUs (cpuinfo cannot read /sys there and older builds crash on
    import), so x86_64 is the default and arm64 an explicit opt-in (cdk.json lambdaArchitecture) to be
    smoke-tested before use."""
    if config.lambda_architecture == "arm64":
        return lambda_.Architecture.ARM_64
    return lambda_.Architecture.X86_64


def lambda_code(function: LambdaFunction, config: AppConfig) -> lambda_.Code:
    """The function's code asset, for ``config``'s architecture and model bundle: the real Docker-free
    package, or a tiny placeholder for fast tests (``lightweightAssets``)."""
    if config.lightweight_assets:
        return lambda_.Code.from_asset(str(lightweight_asset_dir(function)))
    arch, model_bundle_dir = config.lambda_architecture, config.model_bundle_dir
    return lambda_.Code.from_asset(
        str(REPO_ROOT / "lambdas"),
        # The package builder hashes every input (lock file, code, model bundle) itself, so CDK's
        # source fingerprint is replaced by an output hash and bundling is skipped only if unchanged.
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Never pulled: local bundling always succeeds or raises, so Docker is not needed.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.12"),
            # CDK caches bundling by source path + options: this makes the api and batch assets distinct
            # (without it the batch function silently received the api package).
            environment={"LAMBDA_PACKAGE": f"{function}-{arch}-{model_bundle_dir}"},
            local=LocalPackageBundling(function, arch, model_bundle_dir),
        ),
    )
