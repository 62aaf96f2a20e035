"""scripts/image.sh uses the real CPU base (python:3.11-slim-bookworm) whenever it can be had:
present in the storage, or pullable; only when neither, the stand-in made from Debian packages."""

from __future__ import annotations

import os
import subprocess
import tarfile
import uuid
from pathlib import Path

import pytest
from conftest import IMAGE_SH
from support import free_port

from chainer_sagemaker_cdk.local.container import ContainerEngine


def _base(image: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CPU_BASE_IMAGE": image, "IMAGE_PULL_TIMEOUT": "30"}
    out = subprocess.run(
        ["bash", str(IMAGE_SH), "base"], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    return out


def _tiny_image(engine: ContainerEngine, tmp_path: Path) -> str:
    (tmp_path / "marker").write_text("a base that is not the stand-in\n")
    with tarfile.open(tmp_path / "rootfs.tar", "w") as tar:
        tar.add(tmp_path / "marker", arcname="marker")
    name = f"localhost/base-probe-{uuid.uuid4().hex[:8]}:1"
    engine("import", "-q", str(tmp_path / "rootfs.tar"), name)
    return name


def test_a_base_present_in_the_storage_is_used_and_no_stand_in_is_made(
    engine: ContainerEngine, tmp_path: Path
) -> None:
    name = _tiny_image(engine, tmp_path)
    try:
        out = _base(name)
    finally:
        engine("rmi", "-f", name, check=False)
    assert out.stdout.strip() == name
    assert "present" in out.stderr
    assert "STAND-IN" not in out.stderr


def test_a_base_that_can_be_pulled_is_pulled_and_no_stand_in_is_made(
    engine: ContainerEngine, tmp_path: Path
) -> None:
    """Pulled through an OCI archive transport (no registry is reachable from here)."""
    name = _tiny_image(engine, tmp_path)
    archive = tmp_path / "base.oci.tar"
    engine("save", "--format", "oci-archive", "-o", str(archive), name)
    image_id = engine("image", "inspect", "--format", "{{.Id}}", name).stdout.strip()
    engine("rmi", "-f", name)
    try:
        out = _base(f"oci-archive:{archive}")
        assert "(pulled" in out.stderr
        assert "STAND-IN" not in out.stderr
        assert out.stdout.strip() == image_id
    finally:
        engine("rmi", "-f", image_id, check=False)


@pytest.mark.usefixtures("image")  # the stand-in exists by then (this machine has no registry)
def test_the_stand_in_is_used_only_when_the_base_cannot_be_pulled(engine: ContainerEngine) -> None:
    unreachable = f"127.0.0.1:{free_port()}/library/python:3.11-slim-bookworm"
    out = _base(unreachable)
    assert "cannot be had" in out.stderr
    assert "STAND-IN" in out.stderr
    assert out.stdout.strip().startswith("localhost/chainer-sagemaker-standin:bookworm-py3.11-")
