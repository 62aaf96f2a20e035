"""Code from s3://, directories, tarballs and single files; requirements (docs/contract.md §1.6).

The archive checks themselves are in test_archive.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobtree import JobTree
from support import moto_server

from chainer_sagemaker_runtime.environment import TrainingEnv


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isfile() else 0
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def test_a_malicious_code_tarball_fails_the_job(job: JobTree, tmp_path: Path) -> None:
    archive = _tar(tmp_path / "sourcedir.tar.gz", [(_file("../train.py"), b"print(1)")])
    job.configure({"sagemaker_program": "train.py", "sagemaker_submit_directory": str(archive)})
    assert job.train().returncode == 1
    assert "refusing to extract" in job.failure()


_WHO = "import os, sys\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'who'), 'w').write({!r})\n"


def _script(directory: Path, name: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(_WHO.format(name))
    return path


def _custom_image(job: JobTree, src: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Code baked into /opt/ml/code, SAGEMAKER_PROGRAM set in the image, no hyperparameter."""
    _script(job.base / "code", "baked.py")
    return {}, {"SAGEMAKER_PROGRAM": "baked.py"}


def _env_over_hyperparameter(job: JobTree, src: Path) -> tuple[dict[str, str], dict[str, str]]:
    _script(src, "from_hp.py")
    _script(src, "from_env.py")
    hps = {"sagemaker_program": "from_hp.py", "sagemaker_submit_directory": str(src)}
    return hps, {"SAGEMAKER_PROGRAM": "from_env.py"}


def _plain_file(job: JobTree, src: Path) -> tuple[dict[str, str], dict[str, str]]:
    script = _script(src, "single.py")
    return {"sagemaker_program": "single.py", "sagemaker_submit_directory": str(script)}, {}


def _suffixless_tarball(job: JobTree, src: Path) -> tuple[dict[str, str], dict[str, str]]:
    script = _script(src, "packed.py")
    archive = src / "sourcedir"  # no .tar.gz: judged by its content
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(script, arcname="packed.py")
    script.unlink()
    return {"sagemaker_program": "packed.py", "sagemaker_submit_directory": str(archive)}, {}


def _file_in_the_code_dir(job: JobTree, src: Path) -> tuple[dict[str, str], dict[str, str]]:
    script = _script(job.base / "code", "inplace.py")
    return {"sagemaker_program": "inplace.py", "sagemaker_submit_directory": str(script)}, {}


@pytest.mark.parametrize(
    ("arrange", "ran"),
    [
        (_custom_image, "baked.py"),
        (_env_over_hyperparameter, "from_env.py"),
        (_plain_file, "single.py"),
        (_suffixless_tarball, "packed.py"),
        (_file_in_the_code_dir, "inplace.py"),
    ],
    ids=["custom-image", "env-over-hyperparameter", "plain-file", "suffixless-tarball", "in-place"],
)
def test_code_locations_and_entry_points_the_sagemaker_toolkits_accept(
    job: JobTree, tmp_path: Path, arrange: Any, ran: str
) -> None:
    hps, environ = arrange(job, tmp_path / "given")
    job.configure(hps)
    result = job.train(**environ)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (job.model / "who").read_text() == ran


def test_the_default_code_location_is_the_code_dir(job: JobTree) -> None:
    job.configure({"sagemaker_program": "train.py"})
    env = TrainingEnv.load(job.env(), num_gpus=0)
    assert env.module_dir == str(job.base / "code")
    assert env.to_env_vars()["SM_MODULE_DIR"] == str(job.base / "code")


def test_a_code_location_that_does_not_exist_says_so(job: JobTree) -> None:
    job.configure({"sagemaker_program": "t.py", "sagemaker_submit_directory": "/no/such/dir"})
    assert job.train().returncode == 1
    assert "code location '/no/such/dir' does not exist" in job.failure()


def _wheel(directory: Path, name: str) -> Path:
    """A minimal pure-Python wheel, so the requirements test needs no network."""
    dist = f"{name}-1.0.dist-info"
    path = directory / f"{name}-1.0-py3-none-any.whl"
    files = {
        f"{name}.py": "GREETING = 'installed from requirements.txt'\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = "".join(f"{n},,\n" for n in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for n, text in files.items():
            zf.writestr(n, text)
        zf.writestr(f"{dist}/RECORD", record)
    return path


@pytest.fixture
def unique_package() -> Iterator[str]:
    name = f"cs_tiny_{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(
        [sys.executable, "-m", "pip", "uninstall", "-y", "-q", name],
        capture_output=True,
        check=False,
    )


def test_requirements_are_installed_before_the_script_runs(
    job: JobTree, code_dir: Path, unique_package: str
) -> None:
    wheel = _wheel(code_dir, unique_package)
    (code_dir / "requirements.txt").write_text(f"./{wheel.name}\n")
    (code_dir / "uses_it.py").write_text(
        f"import os, {unique_package} as m\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'greeting'), 'w').write(m.GREETING)\n"
    )
    job.configure({"sagemaker_program": "uses_it.py", "sagemaker_submit_directory": str(code_dir)})
    result = job.train()
    assert result.returncode == 0, result.stderr[-2000:]
    assert (job.model / "greeting").read_text() == "installed from requirements.txt"


def test_code_dir_with_setup_py_is_installed_and_run_as_a_module(
    job: JobTree, code_dir: Path, unique_package: str
) -> None:
    (code_dir / "setup.py").write_text(
        f"from setuptools import setup\nsetup(name={unique_package!r}, version='1.0', "
        f"py_modules=['{unique_package}'])\n"
    )
    (code_dir / f"{unique_package}.py").write_text(
        "import os, sys\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'how'), 'w')"
        ".write(__name__ + ' ' + ' '.join(sys.argv[1:]))\n"
    )
    job.configure(
        {
            "sagemaker_program": f"{unique_package}.py",
            "sagemaker_submit_directory": str(code_dir),
            "x": 1,
        }
    )
    result = job.train()
    assert result.returncode == 0, result.stderr[-2000:]
    assert "-m " + unique_package in result.stderr
    assert (job.model / "how").read_text() == "__main__ -x 1"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible server (moto's standalone server) on loopback."""
    with moto_server() as url:
        yield url


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def test_code_is_fetched_from_an_s3_submit_directory(
    job: JobTree, tmp_path: Path, s3_endpoint: str
) -> None:
    import boto3

    src = tmp_path / "src"
    src.mkdir()
    (src / "train.py").write_text(
        "import os\nopen(os.path.join(os.environ['SM_MODEL_DIR'], 'from'), 'w').write('s3')\n"
    )
    archive = tmp_path / "sourcedir.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "train.py", arcname="train.py")
    s3 = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", **_creds())
    s3.create_bucket(Bucket="code-bucket")
    s3.upload_file(str(archive), "code-bucket", "job-1/source/sourcedir.tar.gz")

    job.configure(
        {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": "s3://code-bucket/job-1/source/sourcedir.tar.gz",
            "sagemaker_region": "us-east-1",
        }
    )
    result = job.train(AWS_ENDPOINT_URL=s3_endpoint, **S3_ENV)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (job.model / "from").read_text() == "s3"
    assert (job.base / "code" / "train.py").exists()


def test_a_missing_s3_object_fails_with_the_url(job: JobTree, s3_endpoint: str) -> None:
    job.configure(
        {"sagemaker_program": "t.py", "sagemaker_submit_directory": "s3://nobucket/k.tar.gz"}
    )
    assert job.train(AWS_ENDPOINT_URL=s3_endpoint, **S3_ENV).returncode == 1
    assert "cannot download the code from s3://nobucket/k.tar.gz" in job.failure()


def _creds() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
    }


def test_no_credentials_leak_into_the_failure_file(job: JobTree, s3_endpoint: str) -> None:
    job.configure({"sagemaker_program": "t.py", "sagemaker_submit_directory": "s3://b/none"})
    env = {**S3_ENV, "AWS_SECRET_ACCESS_KEY": "very-secret-value"}
    job.train(AWS_ENDPOINT_URL=s3_endpoint, **env)
    assert "very-secret-value" not in job.failure()
    assert os.environ.get("AWS_SECRET_ACCESS_KEY") != "very-secret-value"
