"""`train` as the image's command (PID 1, no --init), on a job tree mounted at /opt/ml:
what SageMaker's `docker run IMAGE train` does."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import ContainerJob
from imagejob import job_tree, mounts

from chainer_sagemaker_cdk.local.container import ContainerEngine


def _name() -> str:
    return f"chainer-test-{uuid.uuid4().hex[:8]}"


def test_the_digits_example_trains_in_the_image_and_leaves_success_and_the_model(
    digits_job: ContainerJob,
) -> None:
    base = digits_job.base
    assert digits_job.exit_code == 0, digits_job.log[-3000:]
    assert (base / "output" / "success").exists()
    assert not (base / "output" / "failure").exists()
    with np.load(base / "model" / "model.npz") as model:
        assert any(k.endswith("W") for k in model.files)
    metrics = json.loads((base / "output" / "data" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.90  # the README's bound for the example
    print(f"container start to the script's first line: {digits_job.seconds_to_first_line:.2f} s")


@pytest.mark.timeout(120)
def test_a_failing_script_leaves_a_failure_file_with_its_error(
    engine: ContainerEngine, image: str, tmp_path: Path
) -> None:
    base = job_tree(
        tmp_path / "ml", program="boom.py", code="raise SystemExit('the data is missing')\n"
    )
    name = _name()
    try:
        out = engine("run", "--name", name, "--network", "none", *mounts(base, {}), image, "train",
                     check=False, timeout=100)  # fmt: skip
    finally:
        engine.remove(name)
    assert out.returncode == 1
    failure = (base / "output" / "failure").read_text()
    assert "the data is missing" in failure
    assert not (base / "output" / "success").exists()


SLOW = """
import sys, time
print("first line", flush=True)
time.sleep(600)
"""


@pytest.mark.timeout(120)
def test_sigterm_to_the_container_ends_the_job_with_a_failure_file(
    engine: ContainerEngine, image: str, tmp_path: Path
) -> None:
    """StopTrainingJob: the platform sends SIGTERM to the container's PID 1, `train`."""
    base = job_tree(tmp_path / "ml", program="slow.py", code=SLOW)
    name = _name()
    try:
        engine("run", "-d", "--name", name, "--network", "none", "-e",
               "SAGEMAKER_SIGTERM_GRACE_SECONDS=5", *mounts(base, {}), image, "train")  # fmt: skip
        deadline = time.monotonic() + 60
        while "first line" not in engine("logs", name).stdout:
            assert time.monotonic() < deadline, engine("logs", name).stderr
            time.sleep(0.2)
        engine("kill", "--signal", "TERM", name)
        engine("wait", name, timeout=40)
        code = engine.exit_code(name)
    finally:
        engine.remove(name)
    assert code != 0
    failure = (base / "output" / "failure").read_text()
    assert "SIGTERM" in failure, failure
    assert not (base / "output" / "success").exists()
