"""Where the training and serving code comes from (``from_*`` + ``bind``)."""

from __future__ import annotations

import hashlib
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from constructs import Construct

from . import _archive, _assets
from ._validation import require

__all__ = ["CodeConfig", "SourceCode"]


@dataclass(frozen=True)
class CodeConfig:
    """What a bound :class:`SourceCode` gives the job: its ``s3://`` URL and the entry point."""

    s3_url: str
    entry_point: str
    object_name: str = "sourcedir.tar.gz"
    """The file name of the archive (the last part of its S3 key)."""
    asset_hash: str | None = None
    """The staged asset's hash when the code is a file asset (local mode finds it by it)."""
    bucket_name: str | None = None
    """The bucket that holds the archive (for the list grant of an isolated job's channel)."""
    object_key: str | None = None
    """The archive's key in that bucket."""


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

        :param dependencies: directories (or files) copied next to the entry point at the
            archive root, as the SageMaker SDK does; left out, none.

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
            self._built = _assets.build_code(self.source_dir, self.dependencies)
        path, digest = self._built
        asset = _assets.file_asset(scope, f"ChainerCode{digest[:16]}", path, digest)
        key = asset.s3_object_key
        _assets.grant_object_read(scope, grantee, asset.s3_bucket_name, key)
        return CodeConfig(
            asset.s3_object_url,
            self.entry_point,
            _assets.basename(asset.s3_object_key),
            asset.asset_hash,
            asset.s3_bucket_name,
            key,
        )


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
        asset = _assets.file_asset(scope, f"ChainerCode{digest[:16]}", self.path, digest)
        key = asset.s3_object_key
        _assets.grant_object_read(scope, grantee, asset.s3_bucket_name, key)
        return CodeConfig(
            asset.s3_object_url,
            self.entry_point,
            _assets.basename(asset.s3_object_key),
            asset.asset_hash,
            asset.s3_bucket_name,
            key,
        )


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
        _assets.grant_bucket_object_read(grantee, self.bucket, self.key)
        return CodeConfig(
            self.bucket.s3_url_for_object(self.key),
            self.entry_point,
            _assets.basename(self.key),
            bucket_name=self.bucket.bucket_name,
            object_key=self.key,
        )
