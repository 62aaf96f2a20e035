"""A two-host ChainerMN job in two containers on a private podman network, each started as
SageMaker starts it (`run IMAGE train`, train as PID 1, no --init): algo-1 runs mpirun over ssh
to algo-2, and both containers exit by themselves."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from imagejob import job_tree, mounts

from chainer_sagemaker_cdk.local.container import ContainerEngine

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
HOSTS = ("algo-1", "algo-2")
# What the test is about is the two-container flow; the bound only says the model learned
# (chance is 0.1). Three epochs of the ChainerMN example over two containers usually pass
# 0.9 (0.893 once in CI, before the example was seeded); tests/multihost use 0.8 too.
MIN_ACCURACY = 0.8


def _log(engine: ContainerEngine, name: str) -> str:
    out = engine("logs", name, check=False)
    return (out.stdout + out.stderr)[-2500:]


@pytest.mark.timeout(360)
def test_two_containers_train_chainermn_over_ssh_and_both_exit_by_themselves(
    engine: ContainerEngine, image: str, digits_channels: dict[str, Path], tmp_path: Path
) -> None:
    tag = f"chainer-test-{uuid.uuid4().hex[:8]}"
    containers = [f"{tag}-{host}" for host in HOSTS]
    bases = {
        host: job_tree(
            tmp_path / host / "ml",
            program="train_mn.py",
            code=EXAMPLE,
            hyperparameters={"epochs": 3},
            hosts=HOSTS,
            current_host=host,
            channels=("train", "test"),
        )
        for host in HOSTS
    }
    with engine.network(tag) as network:  # a subnet of 10.213.64.0/18 (scripts/image.sh)
        try:
            for host, name in zip(reversed(HOSTS), reversed(containers), strict=True):
                engine(
                    "run", "-d", "--name", name, "--hostname", host, "--network", network,
                    "--network-alias", host, "-e", "SAGEMAKER_MPI_WAIT_SECONDS=120",
                    *mounts(bases[host], digits_channels), image, "train",
                )  # fmt: skip
            codes = {}
            deadline = time.monotonic() + 300
            for host, name in zip(HOSTS, containers, strict=True):
                with contextlib.suppress(subprocess.TimeoutExpired):
                    engine("wait", name, timeout=max(1.0, deadline - time.monotonic()))
                state = engine("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
                codes[host] = None if state == "true" else engine.exit_code(name)
            logs = {h: _log(engine, n) for h, n in zip(HOSTS, containers, strict=True)}
        finally:
            engine.remove(*containers)
    assert codes["algo-1"] == 0, logs["algo-1"]
    assert codes["algo-2"] is not None, f"algo-2 did not exit by itself:\n{logs['algo-2']}"
    assert codes["algo-2"] == 0, logs["algo-2"]
    master = bases["algo-1"]
    assert (master / "output" / "success").exists()
    assert (master / "model" / "model.npz").exists()
    metrics = json.loads((master / "output" / "data" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= MIN_ACCURACY
    assert (bases["algo-2"] / "output" / "success").exists()
