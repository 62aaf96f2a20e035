"""Staging and reading S3 objects: deterministic archives as file assets, scoped reads."""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

from aws_cdk import AssetHashType, Aws, Fn
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from constructs import Construct

from . import _archive, _iam
from ._validation import is_unresolved, require, stack_of

__all__ = [
    "S3_URL",
    "basename",
    "build_code",
    "file_asset",
    "grant_bucket_object_read",
    "grant_object_read",
    "stage",
    "url_object_arn",
]

S3_URL = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(.+)$")


def object_arn(scope: Construct, bucket_name: str, key: str) -> str:
    return stack_of(scope).format_arn(
        service="s3", region="", account="", resource=bucket_name, resource_name=key
    )


def grant_object_read(scope: Construct, grantee: iam.IGrantable, bucket: str, key: str) -> None:
    _iam.add(
        grantee.grant_principal, _iam.statement(["s3:GetObject"], [object_arn(scope, bucket, key)])
    )


def grant_bucket_object_read(grantee: iam.IGrantable, bucket: s3.IBucket, key: str) -> None:
    """``s3:GetObject`` on one object (and decrypt with the bucket's key): nothing wider."""
    _iam.add(
        grantee.grant_principal, _iam.statement(["s3:GetObject"], [bucket.arn_for_objects(key)])
    )
    if bucket.encryption_key is not None:
        _iam.key_decrypt(grantee.grant_principal, bucket.encryption_key)


def url_object_arn(scope: Construct, prop: str, url: str) -> str:
    """The S3 object ARN of ``s3://bucket/key``; deploy-time tokens are split in CloudFormation."""
    if is_unresolved(url):
        bucket_and_key = Fn.select(1, Fn.split("s3://", url, 2))
        return Fn.join("", ["arn:", Aws.PARTITION, ":s3:::", bucket_and_key])
    match = S3_URL.match(url)
    require(match is not None, prop, url, "give an S3 URL such as s3://my-bucket/path/model.tar.gz")
    assert match is not None
    return object_arn(scope, match.group(1), match.group(2))


def basename(key: str) -> str:
    return key if is_unresolved(key) else key.rsplit("/", 1)[-1]


def file_asset(scope: Construct, archive_id: str, path: Path, digest: str) -> s3_assets.Asset:
    """One asset per (stack, content), shared by every bind in the stack."""
    stack = stack_of(scope)
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


def build_code(source_dir: Path, dependencies: Sequence[Path]) -> tuple[Path, str]:
    return stage(
        # ".tgz": the S3 key of a file asset is "<hash><extension>", and a code channel file
        # must look like a tarball to the runtime ("<hash>.gz" would not).
        "sourcedir.tgz",
        lambda target: _archive.build_source_archive(source_dir, dependencies, target),
    )


def stage(name: str, write: Callable[[Path], str]) -> tuple[Path, str]:
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
