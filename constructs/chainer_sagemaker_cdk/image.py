"""The container image a job or model runs: the project's runtime, ECR, any registry, or the
old official AWS Chainer images."""

from __future__ import annotations

import hashlib
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Aws, CfnMapping, Stack, Token
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from constructs import Construct

from ._iam import add, statement
from ._validation import require, stack_of
from .instance import is_arm_instance, is_gpu_instance

__all__ = [
    "OFFICIAL_ACCOUNTS",
    "OFFICIAL_VERSIONS",
    "ImageConfig",
    "RuntimeImage",
    "default_runtime_directory",
    "resolve_official_version",
]

OFFICIAL_VERSIONS = ("4.0.0", "4.1.0", "5.0.0")
OFFICIAL_PY_VERSIONS = ("py2", "py3")
_COMMERCIAL_ACCOUNT = "520713654638"
OFFICIAL_ACCOUNTS: Mapping[str, str] = {
    "us-gov-west-1": "246785580436",
    "cn-north-1": "422961961927",
    "cn-northwest-1": "423003514399",
    "ap-east-1": "057415533634",
    "me-south-1": "724002660598",
    "af-south-1": "313743910680",
    "eu-south-1": "048378556238",
}
_ECR_URI = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?"
    r"/(?P<repo>[a-z0-9._/-]+)(?::[\w.-]+|@sha256:[0-9a-f]{64})$"
)
_ECR_PULL = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]


@dataclass(frozen=True)
class ImageConfig:
    """A bound image: the URI SageMaker pulls."""

    image_uri: str


def default_runtime_directory() -> Path:
    """``runtime/`` of this repository (the Dockerfile's build context)."""
    return Path(__file__).resolve().parents[2] / "runtime"


def resolve_official_version(framework_version: str) -> str:
    """``5.0`` -> ``5.0.0`` (latest patch); unknown versions are refused with the valid list."""
    if framework_version in OFFICIAL_VERSIONS:
        return framework_version
    matches = [v for v in OFFICIAL_VERSIONS if v.startswith(f"{framework_version}.")]
    require(
        bool(matches) and framework_version.count(".") == 1,
        "framework_version",
        framework_version,
        f"use one of {', '.join(OFFICIAL_VERSIONS)} (or 4.0, 4.1, 5.0)",
    )
    return max(matches, key=lambda v: tuple(int(p) for p in v.split(".")))


def _require_x86(instance_type: str, image: str) -> None:
    """The runtime's images are linux/amd64 only (CUDA base images, Chainer wheels)."""
    require(
        not is_arm_instance(instance_type),
        "instance_type",
        instance_type,
        f"{image} is built for linux/amd64 and cannot run on AWS Graviton (arm64) types: use an "
        "x86 type (e.g. ml.c6i, ml.m5) or RuntimeImage.from_registry with an arm64 image",
    )


def _grant_pull(grantee: iam.IGrantable, repository_arn: str) -> None:
    add(
        grantee.grant_principal,
        statement(_ECR_PULL, [repository_arn]),
        # GetAuthorizationToken has no resource type.
        statement(["ecr:GetAuthorizationToken"], ["*"]),
    )


class RuntimeImage(ABC):
    """Where the container image comes from; ``bind`` creates assets and grants pulls."""

    @staticmethod
    def from_asset(
        directory: str | Path | None = None,
        *,
        chainer_version: str | None = None,
        python_version: str | None = None,
        cupy_package: str | None = None,
        build_args: Mapping[str, str] | None = None,
    ) -> RuntimeImage:
        """Build ``Dockerfile`` in ``directory`` as an image asset (the default image).

        :param directory: build context; left out, this repository's ``runtime/``.
        :param chainer_version: ``CHAINER_VERSION`` build arg; left out, the Dockerfile's default.
        :param python_version: ``PYTHON_VERSION`` build arg; left out, the Dockerfile's default.
        :param cupy_package: ``CUPY_PACKAGE`` build arg for the GPU variant; left out, the
            Dockerfile's default.
        :param build_args: further build args. ``VARIANT`` is always set from the instance type
            (``gpu`` for ``g*``/``p*`` families, else ``cpu``).
        """
        args = dict(build_args or {})
        for name, value in (
            ("CHAINER_VERSION", chainer_version),
            ("PYTHON_VERSION", python_version),
            ("CUPY_PACKAGE", cupy_package),
        ):
            if value is not None:
                args[name] = value
        require(
            "VARIANT" not in args,
            "build_args",
            dict(build_args or {}),
            "leave VARIANT out: it follows the instance type",
        )
        return _AssetImage(Path(directory) if directory else default_runtime_directory(), args)

    @staticmethod
    def from_ecr_repository(repository: ecr.IRepository, tag: str = "latest") -> RuntimeImage:
        """An image in an ECR repository; the role may pull from that repository only.

        :param tag: left out, ``latest``.
        """
        return _EcrImage(repository, tag)

    @staticmethod
    def from_registry(image_uri: str) -> RuntimeImage:
        """Any image URI; an ECR URI also grants pull on that repository."""
        require(
            Token.is_unresolved(image_uri) or (bool(image_uri.strip()) and " " not in image_uri),
            "image_uri",
            image_uri,
            "give a full image URI such as registry/name:tag",
        )
        return _RegistryImage(image_uri)

    @staticmethod
    def official(framework_version: str = "5.0.0", py_version: str = "py3") -> RuntimeImage:
        """The old AWS ``sagemaker-chainer`` images (Chainer 4.0.0-5.0.0), region-aware.

        :param framework_version: 4.0.0, 4.1.0 or 5.0.0 (``5.0`` means the latest 5.0.x);
            left out, 5.0.0.
        :param py_version: ``py2`` or ``py3``; left out, ``py3``.
        """
        version = resolve_official_version(framework_version)
        require(py_version in OFFICIAL_PY_VERSIONS, "py_version", py_version, "use py2 or py3")
        return _OfficialImage(version, py_version)

    @abstractmethod
    def bind(self, scope: Construct, grantee: iam.IGrantable, instance_type: str) -> ImageConfig:
        """Return the image URI for ``instance_type`` and let ``grantee`` pull it."""


class _AssetImage(RuntimeImage):
    def __init__(self, directory: Path, build_args: dict[str, str]) -> None:
        self.directory = directory
        self.build_args = build_args

    def bind(self, scope: Construct, grantee: iam.IGrantable, instance_type: str) -> ImageConfig:
        require(
            (self.directory / "Dockerfile").is_file(),
            "directory",
            str(self.directory),
            "give the build context that holds the runtime Dockerfile, or use "
            "RuntimeImage.from_registry/from_ecr_repository",
        )
        _require_x86(instance_type, "The runtime image (RuntimeImage.from_asset)")
        variant = "gpu" if is_gpu_instance(instance_type) else "cpu"
        stack = stack_of(scope)
        asset_id = f"ChainerRuntimeImage{variant.upper()}"
        if self.build_args or self.directory != default_runtime_directory():
            # One image per build context and build args: another from_asset is another image.
            key = json.dumps([str(self.directory), self.build_args], sort_keys=True)
            asset_id += hashlib.sha256(key.encode()).hexdigest()[:8]
        existing = stack.node.try_find_child(asset_id)
        if isinstance(existing, ecr_assets.DockerImageAsset):
            asset = existing
        else:
            asset = ecr_assets.DockerImageAsset(
                stack,
                asset_id,
                directory=str(self.directory),
                build_args={"VARIANT": variant, **self.build_args},
                platform=ecr_assets.Platform.LINUX_AMD64,
                exclude=["**/__pycache__", "**/*.pyc", ".venv*", "**/.pytest_cache"],
            )
        _grant_pull(grantee, asset.repository.repository_arn)
        return ImageConfig(asset.image_uri)


class _EcrImage(RuntimeImage):
    def __init__(self, repository: ecr.IRepository, tag: str) -> None:
        self.repository = repository
        self.tag = tag

    def bind(self, scope: Construct, grantee: iam.IGrantable, instance_type: str) -> ImageConfig:
        _grant_pull(grantee, self.repository.repository_arn)
        return ImageConfig(self.repository.repository_uri_for_tag(self.tag))


class _RegistryImage(RuntimeImage):
    def __init__(self, image_uri: str) -> None:
        self.image_uri = image_uri

    def bind(self, scope: Construct, grantee: iam.IGrantable, instance_type: str) -> ImageConfig:
        match = _ECR_URI.match(self.image_uri) if not Token.is_unresolved(self.image_uri) else None
        if match:
            arn = stack_of(scope).format_arn(
                service="ecr",
                account=match["account"],
                region=match["region"],
                resource="repository",
                resource_name=match["repo"],
            )
            _grant_pull(grantee, arn)
        return ImageConfig(self.image_uri)


class _OfficialImage(RuntimeImage):
    def __init__(self, version: str, py_version: str) -> None:
        self.version = version
        self.py_version = py_version

    def _account(self, stack: Stack) -> str:
        if not Token.is_unresolved(stack.region):
            return OFFICIAL_ACCOUNTS.get(stack.region, _COMMERCIAL_ACCOUNT)
        mapping = stack.node.try_find_child("ChainerOfficialImageAccounts")
        if not isinstance(mapping, CfnMapping):
            mapping = CfnMapping(
                stack,
                "ChainerOfficialImageAccounts",
                mapping={
                    region: {"account": account} for region, account in OFFICIAL_ACCOUNTS.items()
                },
            )
        return mapping.find_in_map(Aws.REGION, "account", _COMMERCIAL_ACCOUNT)

    def bind(self, scope: Construct, grantee: iam.IGrantable, instance_type: str) -> ImageConfig:
        _require_x86(instance_type, "The official sagemaker-chainer image")
        stack = stack_of(scope)
        account = self._account(stack)
        variant = "gpu" if is_gpu_instance(instance_type) else "cpu"
        tag = f"{self.version}-{variant}-{self.py_version}"
        suffix = stack.url_suffix
        if not Token.is_unresolved(stack.region):
            suffix = "amazonaws.com.cn" if stack.region.startswith("cn-") else "amazonaws.com"
        uri = f"{account}.dkr.ecr.{stack.region}.{suffix}/sagemaker-chainer:{tag}"
        arn = stack.format_arn(
            service="ecr", account=account, resource="repository", resource_name="sagemaker-chainer"
        )
        _grant_pull(grantee, arn)
        return ImageConfig(uri)
