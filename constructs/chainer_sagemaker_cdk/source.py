"""Where the training/serving code and the model data come from (``from_*`` + ``bind``)."""

from __future__ import annotations

import hashlib
import re
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import ArnFormat, AssetHashType, Aws, Fn, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import custom_resources as cr

from constructs import Construct

from . import _archive, _iam
from ._validation import is_unresolved, require

__all__ = ["CodeConfig", "ModelData", "ModelDataConfig", "SourceCode"]

_S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")


@dataclass(frozen=True)
class CodeConfig:
    """What a bound :class:`SourceCode` gives the job: its ``s3://`` URL and the entry point."""

    s3_url: str
    entry_point: str
    object_name: str = "sourcedir.tar.gz"
    """The file name of the archive (the last part of its S3 key)."""


@dataclass(frozen=True)
class ModelDataConfig:
    """What a bound :class:`ModelData` gives the model: the ``s3://`` URL of ``model.tar.gz``."""

    s3_url: str


def _object_arn(scope: Construct, bucket_name: str, key: str) -> str:
    return Stack.of(scope).format_arn(
        service="s3", region="", account="", resource=bucket_name, resource_name=key
    )


def _grant_object_read(scope: Construct, grantee: iam.IGrantable, bucket: str, key: str) -> None:
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[_object_arn(scope, bucket, key)])
    )


def _grant_bucket_object_read(grantee: iam.IGrantable, bucket: s3.IBucket, key: str) -> None:
    """``s3:GetObject`` on one object (and decrypt with the bucket's key): nothing wider."""
    grantee.grant_principal.add_to_principal_policy(
        iam.PolicyStatement(actions=["s3:GetObject"], resources=[bucket.arn_for_objects(key)])
    )
    if bucket.encryption_key is not None:
        _iam.key_decrypt(grantee.grant_principal, bucket.encryption_key)


def _url_object_arn(scope: Construct, prop: str, url: str) -> str:
    """The S3 object ARN of ``s3://bucket/key``; deploy-time tokens are split in CloudFormation."""
    if is_unresolved(url):
        bucket_and_key = Fn.select(1, Fn.split("s3://", url, 2))
        return Fn.join("", ["arn:", Aws.PARTITION, ":s3:::", bucket_and_key])
    match = _S3_URL.match(url)
    require(match is not None, prop, url, "give an S3 URL such as s3://my-bucket/path/model.tar.gz")
    assert match is not None
    return _object_arn(scope, match.group(1), match.group(2))


def _basename(key: str) -> str:
    return key if is_unresolved(key) else key.rsplit("/", 1)[-1]


class _Staged:
    """One deterministic archive per (scope, content), shared by every bind in a stack."""

    @staticmethod
    def file_asset(scope: Construct, archive_id: str, path: Path, digest: str) -> s3_assets.Asset:
        stack = Stack.of(scope)
        existing = stack.node.try_find_child(archive_id)
        if isinstance(existing, s3_assets.Asset):
            return existing
        return s3_assets.Asset(
            stack,
            archive_id,
            path=str(path),
            asset_hash=digest,
            asset_hash_type=AssetHashType.CUSTOM,
        )


def _build(source_dir: Path, dependencies: Sequence[Path]) -> tuple[Path, str]:
    return _stage(
        # ".tgz": the S3 key of a file asset is "<hash><extension>", and a code channel file
        # must look like a tarball to the runtime ("<hash>.gz" would not).
        "sourcedir.tgz",
        lambda target: _archive.build_source_archive(source_dir, dependencies, target),
    )


def _stage(name: str, write: Callable[[Path], str]) -> tuple[Path, str]:
    """Write an archive once per content, under a directory named by its hash."""
    staging = Path(tempfile.mkdtemp(prefix="chainer-sagemaker-cdk-"))
    target = staging / name
    digest = write(target)
    final_dir = Path(tempfile.gettempdir()) / "chainer-sagemaker-cdk" / digest
    final = final_dir / name
    if not final.exists():
        final_dir.mkdir(parents=True, exist_ok=True)
        target.replace(final)
    else:
        target.unlink()
    staging.rmdir()
    return final, digest


class SourceCode(ABC):
    """The user's code: packed as SageMaker expects (``sourcedir.tar.gz`` with the entry point)."""

    entry_point: str

    def local_tree(self) -> tuple[Path, list[Path]] | None:
        """The code as files on this machine (to pack into a model), or None if it is in S3."""
        return None

    @staticmethod
    def from_directory(
        source_dir: str | Path, entry_point: str, dependencies: Sequence[str | Path] = ()
    ) -> SourceCode:
        """Pack ``source_dir`` (plus each of ``dependencies`` at the archive root) at synth time.

        The archive is deterministic, so the asset hash only changes when the code does;
        ``__pycache__``, ``*.pyc``, ``.git`` and virtualenvs are left out.
        """
        return _DirectorySource(Path(source_dir), entry_point, [Path(d) for d in dependencies])

    @staticmethod
    def from_tarball(path: str | Path, entry_point: str) -> SourceCode:
        """Use an existing ``.tar.gz`` file that holds ``entry_point`` at its root."""
        return _TarballSource(Path(path), entry_point)

    @staticmethod
    def from_bucket(bucket: s3.IBucket, key: str, entry_point: str) -> SourceCode:
        """Use a ``sourcedir.tar.gz`` that already sits in S3; the role may read that object."""
        return _BucketSource(bucket, key, entry_point)

    @abstractmethod
    def bind(self, scope: Construct, grantee: iam.IGrantable) -> CodeConfig:
        """Create the asset on first use in ``scope``'s stack and let ``grantee`` read it."""


def _check_entry_point(entry_point: str) -> None:
    require(
        bool(entry_point)
        and not entry_point.startswith("/")
        and ".." not in entry_point.split("/"),
        "entry_point",
        entry_point,
        "give a file name relative to the code directory, e.g. train.py",
    )


class _DirectorySource(SourceCode):
    def __init__(self, source_dir: Path, entry_point: str, dependencies: list[Path]) -> None:
        require(
            source_dir.is_dir(),
            "source_dir",
            str(source_dir),
            "give an existing directory that holds the entry point",
        )
        _check_entry_point(entry_point)
        require(
            (source_dir / entry_point).is_file(),
            "entry_point",
            entry_point,
            f"create {source_dir / entry_point} or name a file that exists in source_dir",
        )
        for dep in dependencies:
            require(
                dep.exists(),
                "dependencies",
                str(dep),
                "list existing directories (or files) to copy to the archive root",
            )
        self.source_dir = source_dir
        self.entry_point = entry_point
        self.dependencies = dependencies
        self._built: tuple[Path, str] | None = None

    def local_tree(self) -> tuple[Path, list[Path]] | None:
        return self.source_dir, list(self.dependencies)

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> CodeConfig:
        if self._built is None:
            self._built = _build(self.source_dir, self.dependencies)
        path, digest = self._built
        asset = _Staged.file_asset(scope, f"ChainerCode{digest[:16]}", path, digest)
        _grant_object_read(scope, grantee, asset.s3_bucket_name, asset.s3_object_key)
        return CodeConfig(asset.s3_object_url, self.entry_point, _basename(asset.s3_object_key))


class _TarballSource(SourceCode):
    def __init__(self, path: Path, entry_point: str) -> None:
        require(
            path.is_file() and path.name.endswith((".tar.gz", ".tgz")),
            "path",
            str(path),
            "give an existing .tar.gz file",
        )
        _check_entry_point(entry_point)
        self.path = path
        self.entry_point = entry_point

    def local_tree(self) -> tuple[Path, list[Path]] | None:
        target = Path(tempfile.mkdtemp(prefix="chainer-sagemaker-cdk-code-"))
        return _archive.extract(self.path, target), []

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> CodeConfig:
        digest = hashlib.sha256(self.path.read_bytes()).hexdigest()
        asset = _Staged.file_asset(scope, f"ChainerCode{digest[:16]}", self.path, digest)
        _grant_object_read(scope, grantee, asset.s3_bucket_name, asset.s3_object_key)
        return CodeConfig(asset.s3_object_url, self.entry_point, _basename(asset.s3_object_key))


class _BucketSource(SourceCode):
    def __init__(self, bucket: s3.IBucket, key: str, entry_point: str) -> None:
        require(
            bool(key) and not key.startswith("/"),
            "key",
            key,
            "give the object key without a leading slash, e.g. code/sourcedir.tar.gz",
        )
        _check_entry_point(entry_point)
        self.bucket = bucket
        self.key = key
        self.entry_point = entry_point

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> CodeConfig:
        _grant_bucket_object_read(grantee, self.bucket, self.key)
        return CodeConfig(
            self.bucket.s3_url_for_object(self.key), self.entry_point, _basename(self.key)
        )


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
                _S3_URL.match(url) is not None,
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
        path, digest = _stage(
            "model.tar.gz",
            lambda target: _archive.build_model_archive(model_dir, code_dir, dependencies, target),
        )
        asset = _Staged.file_asset(scope, f"ChainerModelData{digest[:16]}", path, digest)
        _grant_object_read(scope, grantee, asset.s3_bucket_name, asset.s3_object_key)
        return ModelDataConfig(asset.s3_object_url)


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
            self._built = _build(self.directory, [])
        path, digest = self._built
        asset = _Staged.file_asset(scope, f"ChainerModelData{digest[:16]}", path, digest)
        _grant_object_read(scope, grantee, asset.s3_bucket_name, asset.s3_object_key)
        return ModelDataConfig(asset.s3_object_url)


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
        asset = _Staged.file_asset(scope, f"ChainerModelData{digest[:16]}", self.path, digest)
        _grant_object_read(scope, grantee, asset.s3_bucket_name, asset.s3_object_key)
        return ModelDataConfig(asset.s3_object_url)


class _BucketModelData(ModelData):
    def __init__(self, bucket: s3.IBucket, key: str) -> None:
        self.bucket = bucket
        self.key = key

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        _grant_bucket_object_read(grantee, self.bucket, self.key)
        return ModelDataConfig(self.bucket.s3_url_for_object(self.key))


class _UrlModelData(ModelData):
    def __init__(self, url: str) -> None:
        self.url = url

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        arn = _url_object_arn(scope, "model_data", self.url)
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["s3:GetObject"], resources=[arn])
        )
        return ModelDataConfig(self.url)


class _TrainingJobModelData(ModelData):
    def __init__(self, training_job_name: str) -> None:
        self.training_job_name = training_job_name

    def bind(self, scope: Construct, grantee: iam.IGrantable) -> ModelDataConfig:
        stack = Stack.of(scope)
        job_arn = stack.format_arn(
            service="sagemaker",
            resource="training-job",
            resource_name=self.training_job_name.lower(),
        )
        call = cr.AwsSdkCall(
            service="SageMaker",
            action="describeTrainingJob",
            parameters={"TrainingJobName": self.training_job_name},
            physical_resource_id=cr.PhysicalResourceId.of(self.training_job_name),
            output_paths=["ModelArtifacts.S3ModelArtifacts"],
        )
        # Our own role: one customer-managed policy, no AWSLambdaBasicExecutionRole.
        role = iam.Role(
            scope,
            "DescribeTrainingJobRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Deploy-time lookup of a training job's model artifacts",
        )
        principal = _iam.PolicyPrincipal.for_role(scope, "DescribeTrainingJobPolicy", role)
        logs_arn = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/lambda/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        _iam.add(
            principal,  # type: ignore[arg-type]
            iam.PolicyStatement(actions=["sagemaker:DescribeTrainingJob"], resources=[job_arn]),
            iam.PolicyStatement(actions=["logs:CreateLogGroup"], resources=[logs_arn]),
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{logs_arn}:log-stream:*"],
            ),
        )
        lookup = cr.AwsCustomResource(
            scope,
            "DescribeTrainingJob",
            on_create=call,
            on_update=call,
            role=role,
            install_latest_aws_sdk=False,
        )
        lookup.node.add_dependency(principal.policy)
        _acknowledge_lookup_function(stack)
        url = lookup.get_response_field("ModelArtifacts.S3ModelArtifacts")
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["s3:GetObject"], resources=[_url_object_arn(scope, "model_data", url)]
            )
        )
        return ModelDataConfig(url)
