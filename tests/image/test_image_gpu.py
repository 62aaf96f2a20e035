"""The GPU variant's recipe, checked without building it (no CUDA base image or Ubuntu archive
is reachable here): every Debian package its stages name is one Ubuntu 24.04 has, and every
Python requirement it pins resolves on PyPI for the Python that image has (3.12, x86_64)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "runtime" / "Dockerfile").read_text()
INSTALL = (REPO / "runtime" / "docker" / "install.sh").read_text()
NOBLE = {
    line.strip()
    for line in (Path(__file__).parent / "noble-packages.txt").read_text().splitlines()
    if line.strip() and not line.startswith("#")
}


def _arg(name: str, text: str = DOCKERFILE) -> str:
    match = re.search(rf"^ARG {name}=(\S+)$", text, flags=re.M)
    assert match, f"ARG {name} has no default in runtime/Dockerfile"
    return match.group(1)


def _gpu_stage() -> str:
    return DOCKERFILE[DOCKERFILE.index("AS base-gpu") : DOCKERFILE.index("FROM base-${VARIANT}")]


def _apt_names(stage: str, args: dict[str, str]) -> set[str]:
    names: set[str] = set()
    for install in re.findall(r"apt-get install([^&]*)", stage.replace("\\\n", " ")):
        for word in install.split():
            if word.startswith("-"):
                continue
            names.add(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], word))
    return names


def test_the_gpu_stage_installs_only_packages_ubuntu_24_04_has() -> None:
    assert _arg("CUDA_IMAGE").endswith("ubuntu24.04")
    names = _apt_names(_gpu_stage(), {"GPU_PYTHON_VERSION": _arg("GPU_PYTHON_VERSION")})
    system = re.findall(r"missing\+=\(([^)]*)\)", INSTALL)  # install.sh's system step
    names |= {n for group in system for n in group.split()}
    assert names, "no apt-get install found in the GPU stage"
    assert names <= NOBLE, f"not in Ubuntu 24.04's archive: {sorted(names - NOBLE)}"
    assert not any(n.startswith("python3.11") for n in names)


def _pip_versions(name: str, *, binary: bool) -> list[str]:
    cert = os.environ.get("PIP_CERT", "/etc/ssl/certs/ca-certificates.crt")
    target = ["--python-version", "3.12"]
    if binary:
        target += ["--only-binary", ":all:"]
        for tag in ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_39_x86_64"):
            target += ["--platform", tag]
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", "--isolated", "--cert", cert,
         *target, name],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, f"{name}: {out.stderr.strip()[-500:]}"
    listed = re.search(r"Available versions: (.*)", out.stdout)
    assert listed, out.stdout
    return [v.strip() for v in listed.group(1).split(",")]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("requirement", "binary"),
    [
        (_arg("CUPY_PACKAGE"), True),  # CuPy for CUDA 12 ships wheels only
        (_arg("NUMPY_SPEC"), True),
        (f"chainer=={_arg('CHAINER_VERSION')}", False),  # a source distribution
        (re.search(r"MPI4PY_SPEC:-([^}]+)\}", INSTALL).group(1), False),  # type: ignore[union-attr]
    ],
)
def test_every_python_requirement_of_the_gpu_image_resolves_on_pypi_for_python_3_12(
    requirement: str, binary: bool
) -> None:
    req = Requirement(requirement)
    versions = _pip_versions(req.name, binary=binary)
    assert any(req.specifier.contains(v) for v in versions), (requirement, versions[:10])
