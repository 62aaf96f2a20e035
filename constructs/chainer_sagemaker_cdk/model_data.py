"""Trained model artifacts (``model.tar.gz``) for a SageMaker model (``from_*`` + ``bind``)."""

from __future__ import annotations

import hashlib
import re
import tempfile
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import custom_resources as cr
from constructs import Construct

from . import _archive, _assets, _iam
from ._validation import is_unresolved, require, stack_of
from .source import SourceCode

__all__ = ["ModelData", "ModelDataConfig"]


@dataclass(frozen=True)
class ModelDataConfig:
    """What a bound :class:`ModelData` gives the model: the ``s3://`` URL of ``model.tar.gz``."""

    s3_url: str
    asset_hash: str | None = None
    """The staged asset's hash when the model data is a file asset (for local mode)."""


_LOOKUP_FUNCTION_ID = "AWS679f53fac002430cb0da5b7982bd2287"  # AwsCustomResource's singleton


def _acknowledge_lookup_function(stack: Stack) -> None:
    function = stack.node.try_find_child(_LOOKUP_FUNCTION_ID)
    if function is None:
        return
    reason = (
        "CloudFormation runs this lookup once per deployment and reports its failure itself: "
        "reserved concurrency and a dead-letter queue do not apply, and it only calls the "
        "SageMaker API (no VPC resources)."
    )
    _iam.acknowledge(
        function,
        [
            f"{pack}-{rule}"
            for pack in ("HIPAA.Security", "NIST.800.53.R5")
            for rule in ("LambdaConcurrency", "LambdaDLQ", "LambdaInsideVPC")
        ],
        reason,
    )
    log_group = function.node.try_find_child("LogGroup")
    if log_group is not None:  # aws-cdk-lib's logGroupForAwsCustomResource feature flag
        _iam.acknowledge(
            log_group,
            [
                f"{pack}-CloudWatchLogGroupEncrypted"
                for pack in ("HIPAA.Security", "NIST.800.53.R5")
            ],
            "The deploy-time lookup's own log group: it holds the lookup's request and the "
            "model artifact URL it returns, no training data; CloudWatch Logs encrypts it "
            "with its own key.",
        )


class ModelData(ABC):
    """Trained model artifacts (``model.tar.gz``) for a SageMaker model."""

    @staticmethod
    def from_directory(directory: str | Path) -> ModelData:
        """Pack ``directory`` as ``model.tar.gz`` (deterministically) at synth time."""
        return _DirectoryModelData(Path(directory))

    @staticmethod
    def from_tarball(path: str | Path) -> ModelData:
        """Upload an existing ``model.tar.gz`` as an asset."""
        return _TarballModelData(Path(path))

    @staticmethod
    def from_bucket(bucket: s3.IBucket, key: str) -> ModelData:
        """Use a ``model.tar.gz`` already in S3 (e.g. a training job's output)."""
        require(
            bool(key) and not key.startswith("/"),
            "key",
            key,
            "give the object key without a leading slash, e.g. job/output/model.tar.gz",
        )
        return _BucketModelData(bucket, key)

    @staticmethod
    def from_s3_url(url: str) -> ModelData:
        """Use ``s3://bucket/key``; deploy-time tokens are split in CloudFormation."""
        if not is_unresolved(url):
            require(
                _assets.S3_URL.match(url) is not None,
                "model_data",
                url,
                "give an S3 URL such as s3://my-bucket/path/model.tar.gz",
            )
        return _UrlModelData(url)

    @staticmethod
    def from_training_job(training_job_name: str) -> ModelData:
        """Attach to a finished training job: its artifacts are looked up at deploy time.

        This adds a custom resource (a Lambda function) that calls DescribeTrainingJob.
        """
        require(
            is_unresolved(training_job_name)
            or bool(re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", training_job_name)),
            "training_job_name",
            training_job_name,
            "give an existing SageMaker training job name (letters, digits, hyphens, <= 63)",
        )
        return _TrainingJobModelData(training_job_name)

    @staticmethod
    def from_model_package(model_package_arn: str) -> ModelData:
        """A registered model package version (``ModelRegistry``): its ``ModelDataUrl`` is
        looked up at deploy time by a custom resource (DescribeModelPackage)."""
        from .registry import model_package_data

        return model_package_data(model_package_arn)

    @abstractmethod
    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        """Create what is needed on first use and let ``grantee`` read the artifacts."""

    def local_model_dir(self) -> Path | None:
        """The model files on this machine (to repack with code), or None."""
        return None

    def bind_with_code(
        self, scope: Construct, grantee: iam.IGrantable, code: SourceCode
    ) -> ModelDataConfig:
        """``model.tar.gz`` with the code under ``code/``, for network-isolated models."""
        model_dir = self.local_model_dir()
        tree = code.local_tree()
        require(
            model_dir is not None and tree is not None,
            "enable_network_isolation",
            True,
            "an isolated model cannot download its code: use ModelData.from_directory or "
            "from_tarball with SourceCode.from_directory or from_tarball, so the code is packed "
            "into model.tar.gz under code/ at synth time",
        )
        assert model_dir is not None
        assert tree is not None
        code_dir, dependencies = tree
        path, digest = _assets.stage(
            "model.tar.gz",
            lambda target: _archive.build_model_archive(model_dir, code_dir, dependencies, target),
        )
        asset = _assets.file_asset(scope, f"ChainerModelData{digest[:16]}", path, digest)
        key = asset.s3_object_key
        _assets.grant_object_read(scope, grantee, asset.s3_bucket_name, key)
        return ModelDataConfig(asset.s3_object_url, asset.asset_hash)


class _DirectoryModelData(ModelData):
    def __init__(self, directory: Path) -> None:
        require(
            directory.is_dir(),
            "directory",
            str(directory),
            "give an existing directory holding the model files",
        )
        self.directory = directory
        self._built: tuple[Path, str] | None = None

    def local_model_dir(self) -> Path | None:
        return self.directory

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        if self._built is None:
            self._built = _assets.build_code(self.directory, [])
        path, digest = self._built
        asset = _assets.file_asset(scope, f"ChainerModelData{digest[:16]}", path, digest)
        key = asset.s3_object_key
        _assets.grant_object_read(scope, grantee, asset.s3_bucket_name, key)
        return ModelDataConfig(asset.s3_object_url, asset.asset_hash)


class _TarballModelData(ModelData):
    def __init__(self, path: Path) -> None:
        require(
            path.is_file() and path.name.endswith((".tar.gz", ".tgz")),
            "path",
            str(path),
            "give an existing model.tar.gz file",
        )
        self.path = path

    def local_model_dir(self) -> Path | None:
        target = Path(tempfile.mkdtemp(prefix="chainer-sagemaker-cdk-model-"))
        return _archive.extract(self.path, target)

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        asset = _assets.file_asset(scope, f"ChainerModelData{digest[:16]}", self.path, digest)
        key = asset.s3_object_key
        _assets.grant_object_read(scope, grantee, asset.s3_bucket_name, key)
        return ModelDataConfig(asset.s3_object_url, asset.asset_hash)


class _BucketModelData(ModelData):
    def __init__(self, bucket: s3.IBucket, key: str) -> None:
        self.bucket = bucket
        self.key = key

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        _assets.grant_bucket_object_read(grantee, self.bucket, self.key)
        return ModelDataConfig(self.bucket.s3_url_for_object(self.key))


class _UrlModelData(ModelData):
    def __init__(self, url: str) -> None:
        self.url = url

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        arn = _assets.url_object_arn(scope, "model_data", self.url)
        _iam.add(grantee.grant_principal, _iam.statement(["s3:GetObject"], [arn]))
        return ModelDataConfig(self.url)


class _TrainingJobModelData(ModelData):
    def __init__(self, training_job_name: str) -> None:
        self.training_job_name = training_job_name

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        job_arn = stack_of(scope).format_arn(
            service="sagemaker",
            resource="training-job",
            resource_name=self.training_job_name.lower(),
        )
        return _lookup_model_data(
            scope,
            grantee,
            action="describeTrainingJob",
            parameters={"TrainingJobName": self.training_job_name},
            resource_arn=job_arn,
            url_field="ModelArtifacts.S3ModelArtifacts",
            description="Deploy-time lookup of a training job's model artifacts",
        )


def _lookup_model_data(
    scope: Construct,
    grantee: iam.IGrantable,
    *,
    action: str,
    parameters: dict[str, str],
    resource_arn: str,
    url_field: str,
    description: str,
) -> ModelDataConfig:
    """Model data whose URL a SageMaker ``Describe*`` call gives at deploy time (a custom
    resource under its own least-privilege role); ``grantee`` may read the object it names."""
    stack = stack_of(scope)
    name = action[0].upper() + action[1:]  # describeTrainingJob -> DescribeTrainingJob
    call = cr.AwsSdkCall(
        service="SageMaker",
        action=action,
        parameters=parameters,
        physical_resource_id=cr.PhysicalResourceId.of(next(iter(parameters.values()))),
        output_paths=[url_field],
    )
    # Our own role: one customer-managed policy, no AWSLambdaBasicExecutionRole.
    role = iam.Role(
        scope,
        f"{name}Role",
        assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        description=description,
    )
    principal = _iam.PolicyPrincipal.for_role(scope, f"{name}Policy", role)
    logs_arn = stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name="/aws/lambda/*",
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
    _iam.add(
        principal,  # type: ignore[arg-type]
        _iam.statement([f"sagemaker:{name}"], [resource_arn]),
        _iam.statement(["logs:CreateLogGroup"], [logs_arn]),
        _iam.statement(["logs:CreateLogStream", "logs:PutLogEvents"], [f"{logs_arn}:log-stream:*"]),
    )
    lookup = cr.AwsCustomResource(
        scope, name, on_create=call, on_update=call, role=role, install_latest_aws_sdk=False
    )
    lookup.node.add_dependency(principal.policy)
    _acknowledge_lookup_function(stack)
    url = lookup.get_response_field(url_field)
    _iam.add(
        grantee.grant_principal,
        _iam.statement(["s3:GetObject"], [_assets.url_object_arn(scope, "model_data", url)]),
    )
    return ModelDataConfig(url)
