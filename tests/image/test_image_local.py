"""Local mode with --container: the synthesized job and model run in the built image, as
SageMaker runs them (one container per host on a private network, /opt/ml mounted, `train` /
`serve` as the command). The job specs are what CloudAssembly reads from cdk.out."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLE, ContainerJob
from support import free_port

from chainer_sagemaker_cdk.client import Predictor
from chainer_sagemaker_cdk.local import TrainingJobSpec
from chainer_sagemaker_cdk.local.container import (
    ContainerEndpoint,
    ContainerEngine,
    run_training_in_container,
)

HOSTS_SCRIPT = """
import json, os, socket
from mpi4py import MPI

shard = sorted(os.listdir("/opt/ml/input/data/shards"))
names = MPI.COMM_WORLD.gather((socket.gethostname(), shard), root=0)
if MPI.COMM_WORLD.rank == 0:
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "hosts.json"), "w") as f:
        json.dump(sorted(names), f)
"""


@pytest.mark.timeout(240)
def test_a_two_instance_job_runs_one_container_per_host_each_with_its_shard(
    engine: ContainerEngine, image: str, tmp_path: Path
) -> None:
    code = tmp_path / "code"
    code.mkdir()
    (code / "hosts.py").write_text(HOSTS_SCRIPT)
    job = TrainingJobSpec(
        path="Stack/Job",
        hyperparameters={"sagemaker_program": json.dumps("hosts.py")},
        instance_count=2,
        instance_type="ml.c5.xlarge",
        channels={"shards": {"distribution": "ShardedByS3Key"}},
        code_asset=str(code),
    )
    objects = tmp_path / "objects"
    objects.mkdir()
    for key in ("a.rec", "b.rec", "c.rec"):
        (objects / key).write_text(key)
    lines: list[str] = []
    result = run_training_in_container(
        job, {"shards": objects}, tmp_path / "run", image=image, engine=engine, log=lines.append
    )
    assert result.succeeded, "\n".join(lines[-40:])
    with tarfile.open(result.model_artifact) as tar:
        member = tar.extractfile("hosts.json")
        assert member is not None
        # Each host its own container, and its share of the ShardedByS3Key channel.
        assert json.load(member) == [["algo-1", ["a.rec", "c.rec"]], ["algo-2", ["b.rec"]]]
    assert any(line.startswith("[algo-2] ") for line in lines)
    left = engine("ps", "-a", "--filter", "name=chainer-local-", "--format", "{{.Names}}")
    assert not left.stdout.strip()
    assert "chainer-local-" not in engine("network", "ls", "--format", "{{.Name}}").stdout


@pytest.mark.timeout(180)
def test_the_model_is_served_from_the_image_and_predicts(
    engine: ContainerEngine,
    image: str,
    digits_job: ContainerJob,
    digits_channels: dict[str, Path],
    tmp_path: Path,
) -> None:
    model_tar = tmp_path / "model.tar.gz"
    with tarfile.open(model_tar, "w:gz") as tar:
        for f in (digits_job.base / "model").iterdir():
            tar.add(f, arcname=f.name)
    endpoint = ContainerEndpoint(
        model_tar,
        tmp_path / "serve",
        image=image,
        engine=engine,
        environment={"SAGEMAKER_PROGRAM": "train.py"},
        code=EXAMPLE,
        port=free_port(),
        workers=1,
    )
    with endpoint:
        assert endpoint.ready_seconds is not None
        with np.load(digits_channels["test"] / "test.npz") as data:
            x, y = data["x"][:100].astype(np.float32) / 255.0, data["y"][:100]
        scores = np.asarray(Predictor.local(endpoint.url).predict(x))
        assert (scores.argmax(axis=1) == y).mean() >= 0.85
        name = endpoint.container
    assert endpoint.container is None
    assert engine("ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}").stdout == ""


def _assembly(tmp_path: Path) -> Path:
    """A cloud assembly as the constructs record a training job in it (the real synth of the
    example app is tests/e2e's): the job's metadata and its staged code asset."""
    out = tmp_path / "cdk.out"
    out.mkdir()
    script = tmp_path / "fit.py"
    script.write_text(
        "import os, socket\n"
        "print('fitting on', socket.gethostname(), flush=True)\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'weights.txt'), 'w').write('42')\n"
    )
    with tarfile.open(out / "asset.0123abcd.tar.gz", "w:gz") as tar:  # a staged sourcedir
        tar.add(script, arcname="fit.py")
    job = {
        "type": "chainer-sagemaker:training-job",
        "data": {
            "hyperparameters": {"sagemaker_program": json.dumps("fit.py")},
            "instanceCount": 1,
            "instanceType": "ml.c5.xlarge",
            "channels": {},
            "codeAssetHash": "0123abcd",
        },
    }
    manifest = {
        "version": "36.0.0",
        "artifacts": {
            "Digits": {"type": "aws:cloudformation:stack", "metadata": {"/Digits/Job": [job]}}
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainer_sagemaker_cdk.local", *args],
        cwd=cwd, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


@pytest.mark.timeout(240)
def test_the_cli_trains_in_the_image_with_container(
    engine: ContainerEngine, image: str, tmp_path: Path
) -> None:
    cdk_out = _assembly(tmp_path)
    out = _cli("--cdk-out", str(cdk_out), "train", "--container", image,
               "--work-dir", "run", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "[algo-1] fitting on algo-1" in out.stdout
    with tarfile.open(tmp_path / "run" / "artifacts" / "model.tar.gz") as tar:
        member = tar.extractfile("weights.txt")
        assert member is not None
        assert member.read() == b"42"


def test_the_cli_names_the_fix_for_an_image_that_was_not_built(
    engine: ContainerEngine, tmp_path: Path
) -> None:
    cdk_out = _assembly(tmp_path)
    out = _cli("--cdk-out", str(cdk_out), "train", "--container", "chainer-sagemaker:nope",
               cwd=tmp_path)  # fmt: skip
    assert out.returncode == 2
    assert "not in" in out.stderr
    assert "make image" in out.stderr
