"""Fetching the user's code and installing its requirements (docs/contract.md §1.6, §3.1).

The code location (``sagemaker_submit_directory`` / ``SAGEMAKER_SUBMIT_DIRECTORY``) may be an
``s3://`` URL of a gzip tar (downloaded with boto3, which honours ``AWS_ENDPOINT_URL``), a
``file://`` URL or local path of a directory, a tar archive or a single file, or empty or the
code directory itself (the code is already there, as in custom images). Archives go through
:func:`~chainer_sagemaker_runtime.archive.safe_extract`. Shared by ``train`` and ``serve``.
"""

from __future__ import annotations

import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from chainer_sagemaker_runtime._proc import format_command, run_checked
from chainer_sagemaker_runtime.archive import safe_extract
from chainer_sagemaker_runtime.errors import CodeError

__all__ = ["fetch_code", "install_requirements", "parse_s3_url"]

_TARBALL_SUFFIXES = (".tar.gz", ".tgz", ".tar")


def parse_s3_url(url: str) -> tuple[str, str]:
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc or not parsed.path.strip("/"):
        raise CodeError(
            f"{url!r} is not an S3 object URL; expected s3://bucket/key/sourcedir.tar.gz"
        )
    return parsed.netloc, parsed.path.lstrip("/")


def _download_s3(url: str, dest: Path, region: str | None) -> None:
    bucket, key = parse_s3_url(url)
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError as exc:  # pragma: no cover - the image always has boto3
        raise CodeError(
            f"cannot download {url}: boto3 is not installed "
            "(pip install 'chainer-sagemaker-runtime[s3]')"
        ) from exc
    try:
        boto3.client("s3", region_name=region).download_file(bucket, key, str(dest))
    except (BotoCoreError, ClientError) as exc:
        raise CodeError(
            f"cannot download the code from {url}: {exc}. Check that the object exists and that "
            "the job's role may s3:GetObject it."
        ) from exc


def _is_tar(path: Path) -> bool:
    if path.name.endswith(_TARBALL_SUFFIXES):
        return True  # even when broken: safe_extract then says why it cannot be read
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def fetch_code(location: str | None, code_dir: Path, *, region: str | None = None) -> Path:
    """Make the user's code available in ``code_dir`` and return ``code_dir``.

    ``location`` is judged by what it is, as the SageMaker training toolkit does: a directory
    is copied, a file that is a tar archive (whatever its name) is extracted, any other file is
    copied into ``code_dir`` as it is (a lone ``train.py``).
    """
    if not location:
        code_dir.mkdir(parents=True, exist_ok=True)
        return code_dir
    if location.startswith("s3://"):
        with tempfile.TemporaryDirectory(prefix="sourcedir-") as tmp:
            archive = Path(tmp) / "sourcedir.tar.gz"
            _download_s3(location, archive, region)
            safe_extract(archive, code_dir)
        return code_dir
    path = Path(urlparse(location).path if location.startswith("file://") else location)
    if path.is_dir():
        if path.resolve() != code_dir.resolve():
            shutil.copytree(path, code_dir, dirs_exist_ok=True, symlinks=True)
        return code_dir
    if path.is_file():
        if _is_tar(path):
            safe_extract(path, code_dir)
        elif path.parent.resolve() != code_dir.resolve():  # else it is in place already
            code_dir.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, code_dir / path.name)
        return code_dir
    if not path.exists() and path.resolve() == code_dir.resolve():
        code_dir.mkdir(parents=True, exist_ok=True)  # the default: code baked into the image
        return code_dir
    what = "does not exist" if not path.exists() else "is neither a directory nor a file"
    raise CodeError(
        f"code location {location!r} {what}; set sagemaker_submit_directory (or "
        "SAGEMAKER_SUBMIT_DIRECTORY) to an s3:// URL, a directory, a tar archive or a file"
    )


def install_requirements(code_dir: Path, *, python: str = sys.executable) -> bool:
    """``pip install -r requirements.txt`` when the code has one; True when it ran."""
    req = code_dir / "requirements.txt"
    if not req.is_file():
        return False
    argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "-r", str(req)]
    print(f"Installing requirements: {format_command(argv)}", flush=True)
    code, tail = run_checked(argv, cwd=code_dir)
    if code != 0:
        raise CodeError(
            f"installing requirements.txt failed (`{format_command(argv)}` exited with code "
            f"{code}); fix requirements.txt in the source directory. pip said:\n{tail}"
        )
    return True
