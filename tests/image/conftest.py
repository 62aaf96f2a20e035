"""Fixtures for the image tests: the CPU image built by scripts/image.sh (make image), podman
pointed at the repository's own storage (build/podman), and the digits channels.

The image is built once per session (layer-cached: seconds when nothing changed). Every test
removes the containers and networks it made.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imagejob import job_tree, mounts

from chainer_sagemaker_cdk.local.container import ContainerEngine

REPO = Path(__file__).resolve().parents[2]
IMAGE_SH = REPO / "scripts" / "image.sh"
EXAMPLE = REPO / "examples" / "digits"
IMAGE = os.environ.get("IMAGE_TAG", "chainer-sagemaker:cpu")


def _podman_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(IMAGE_SH), "env"], capture_output=True, text=True, check=True)
    env = {}
    for line in out.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = shlex.split(value)[0]
    return env


@pytest.fixture(scope="session")
def engine() -> Iterator[ContainerEngine]:
    saved = dict(os.environ)
    os.environ.update(_podman_env())
    engine = ContainerEngine(os.environ.get("CONTAINER_ENGINE"))
    try:
        yield engine
        left = engine("ps", "-a", "--filter", "name=chainer-", "--format", "{{.Names}}").stdout
        assert not left.strip(), f"the image tests left containers behind: {left}"
        nets = engine("network", "ls", "--format", "{{.Name}}").stdout.split()
        assert not [n for n in nets if n.startswith("chainer-")], f"networks left: {nets}"
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def image(engine: ContainerEngine) -> str:
    """The CPU image, built (or brought up to date) by `scripts/image.sh build`."""
    out = subprocess.run(
        ["bash", str(IMAGE_SH), "build"], capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:] + out.stdout[-3000:]
    print(next(line for line in out.stderr.splitlines() if line.startswith("[image] built")))
    return IMAGE


@pytest.fixture(scope="session")
def digits_channels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    sys.path.insert(0, str(EXAMPLE))
    try:
        from prepare_data import write_channels
    finally:
        sys.path.remove(str(EXAMPLE))
    return write_channels(tmp_path_factory.mktemp("digits"))


@dataclass(frozen=True)
class ContainerJob:
    """A finished `train` container: its /opt/ml tree, exit code, output and timings."""

    base: Path
    exit_code: int
    log: str
    seconds_to_first_line: float | None


FIRST_LINE = "[digits] first line"


@pytest.fixture(scope="session")
def digits_job(
    engine: ContainerEngine,
    image: str,
    digits_channels: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> ContainerJob:
    """The digits example trained in the image (5 epochs), as `docker run IMAGE train`.

    Its code dir is the example plus a first-line marker, so the start-to-first-line time is
    measured from `run` to the script's first output."""
    code = tmp_path_factory.mktemp("code")
    shutil.copytree(EXAMPLE, code, dirs_exist_ok=True)
    (code / "first_line.py").write_text(
        f"print({FIRST_LINE!r}, flush=True)\n"
        "import runpy\nrunpy.run_path('train.py', run_name='__main__')\n"
    )
    base = job_tree(
        tmp_path_factory.mktemp("job") / "ml",
        program="first_line.py",
        code=code,
        hyperparameters={"epochs": 5},
        channels=("train", "test"),
    )
    name = f"chainer-test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    proc = subprocess.Popen(
        [engine.command, "run", "--name", name, "--network", "none",
         *mounts(base, digits_channels), image, "train"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    first: float | None = None
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if first is None and FIRST_LINE in line:
                first = time.monotonic() - started
        code_ = proc.wait(timeout=300)
    finally:
        proc.kill()
        engine.remove(name)
    return ContainerJob(base, code_, "".join(lines), first)
