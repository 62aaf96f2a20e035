"""End to end: synthesize the example app with the real CDK CLI, train it and serve it on this
machine in local mode, predict over HTTP. Also: artifact layout, MPI with two hosts, failures."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from support import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits"
STACK = "ChainerDigits"
MIN_ACCURACY = 0.9  # what the training issue states for the example


@pytest.fixture(scope="module")
def cdk_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cdk synth` of app.py with the CLI from npm, into a fresh directory."""
    out = tmp_path_factory.mktemp("cdk") / "cdk.out"
    cdk = REPO / "node_modules" / ".bin" / "cdk"
    assert cdk.exists(), "the CDK CLI is installed by `make setup` (npm ci)"
    env = {**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1", "CI": "true"}
    result = subprocess.run(
        [
            str(cdk),
            "synth",
            "--quiet",
            "--output",
            str(out),
            "--no-notices",
            "--no-version-reporting",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("digits")
    subprocess.run([sys.executable, str(EXAMPLE / "prepare_data.py"), str(out)], check=True)
    return out


def _local(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chainer_sagemaker_cdk.local", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1"},
    )


@pytest.fixture(scope="module")
def trained(cdk_out: Path, digits: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthesized training job, run by the local-mode CLI (5 epochs to keep CI short)."""
    work = tmp_path_factory.mktemp("run")
    result = _local(
        "--cdk-out", str(cdk_out), "--stack", STACK, "train",
        "--channel", f"train={digits / 'train'}", "--channel", f"test=file://{digits / 'test'}",
        "--hyperparameter", "epochs=5", "--work-dir", str(work),
        cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "[algo-1]" in result.stdout  # the job's log was streamed
    return work


def test_synthesized_job_trains_serves_and_predicts(
    cdk_out: Path, trained: Path, digits: Path
) -> None:
    from chainer_sagemaker_cdk.client import Predictor
    from chainer_sagemaker_cdk.local import CloudAssembly, LocalEndpoint

    models = CloudAssembly(cdk_out).models(STACK)
    assert models, "the pipeline's model is recorded in the assembly"
    model = models[0]
    assert model.environment["SAGEMAKER_PROGRAM"] == "train.py"
    data = np.load(digits / "test" / "test.npz")
    x, y = data["x"].astype(np.float32) / 255.0, data["y"]
    with (
        LocalEndpoint(
            trained / "artifacts" / "model.tar.gz",
            trained,
            environment=model.environment,
            code=model.code_asset,
            port=free_port(),
            workers=1,
        ) as endpoint,
        Predictor.local(endpoint.url) as predictor,
    ):
        scores = predictor.predict(x)
    assert scores.shape == (len(x), 10)
    assert (scores.argmax(axis=1) == y).mean() >= MIN_ACCURACY


def test_artifacts_have_sagemakers_layout(trained: Path) -> None:
    with tarfile.open(trained / "artifacts" / "model.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["model.npz", "model_config.json"]
    with tarfile.open(trained / "artifacts" / "output.tar.gz") as tar:
        names = tar.getnames()
    assert "success" in names
    assert "data/metrics.json" in names
    assert "failure" not in names


def test_the_layout_matches_what_sagemaker_writes(trained: Path) -> None:
    import json

    cfg = trained / "ml" / "input" / "config"
    hps = json.loads((cfg / "hyperparameters.json").read_text())
    assert all(isinstance(v, str) for v in hps.values())
    assert json.loads(hps["epochs"]) == 5
    assert json.loads(hps["sagemaker_program"]) == "train.py"
    assert json.loads((cfg / "resourceconfig.json").read_text())["hosts"] == ["algo-1"]
    assert sorted(json.loads((cfg / "inputdataconfig.json").read_text())) == ["test", "train"]


def test_a_failing_script_makes_local_mode_exit_non_zero_with_the_reason(
    cdk_out: Path, digits: Path, tmp_path: Path
) -> None:
    result = _local(
        "--cdk-out", str(cdk_out), "--stack", STACK, "train",
        "--channel", f"train={digits / 'train'}", "--channel", f"test={digits / 'test'}",
        "--hyperparameter", 'epochs="many"', "--work-dir", str(tmp_path),
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "training failed: ExecuteUserScriptError" in result.stderr
    assert "invalid int value: 'many'" in result.stderr
    with tarfile.open(tmp_path / "artifacts" / "output.tar.gz") as tar:
        assert "failure" in tar.getnames()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--stack", "Nope", "train"],
            "unknown stack 'Nope'; the assembly holds ['ChainerDigits']",
        ),
        (["--stack", STACK, "train", "--channel", "train=/tmp"], "channel(s) ['test']"),
    ],
)
def test_clear_errors(cdk_out: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = _local("--cdk-out", str(cdk_out), *args, "--work-dir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


def test_a_two_instance_job_runs_emulated_under_one_mpirun(digits: Path, tmp_path: Path) -> None:
    """A stack synthesized in-process: the ChainerMN example on two instances, as the emulation
    (every host's ranks under one mpirun here; tests/multihost runs them as separate hosts)."""
    from aws_cdk import App, Stack

    from chainer_sagemaker_cdk import ChainerEstimator, SourceCode
    from chainer_sagemaker_cdk.local import CloudAssembly, run_training

    app = App(outdir=str(tmp_path / "cdk.out"))
    stack = Stack(app, "Mpi")
    ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(EXAMPLE, "train_mn.py"),
        instance_count=2,
        hyperparameters={"epochs": 2},
    )
    app.synth()
    job = CloudAssembly(tmp_path / "cdk.out").training_job("Mpi")
    assert job.instance_count == 2
    lines: list[str] = []
    result = run_training(
        job,
        {"train": digits / "train", "test": digits / "test"},
        tmp_path / "work",
        log=lines.append,
        hosts="emulated",
    )
    output = "\n".join(lines)
    assert "[local] EMULATION: the 2 hosts run as processes of one mpirun" in output
    assert result.succeeded, output[-3000:]
    assert "rank 0 of 2" in output
    assert "rank 1 of 2" in output
    assert "mpirun" in output
    assert (result.base_dir / "model" / "model.npz").exists()


def test_cli_serves_a_chainer_models_own_model_data(trained: Path, tmp_path: Path) -> None:
    """`serve` without --model-data uses the model data the template packs (ModelData asset)."""
    import signal
    import tarfile as tf

    from aws_cdk import App, Stack

    from chainer_sagemaker_cdk import ChainerModel, ModelData, SourceCode
    from chainer_sagemaker_cdk.client import Predictor

    model_dir = tmp_path / "model"
    with tf.open(trained / "artifacts" / "model.tar.gz") as tar:
        tar.extractall(model_dir, filter="data")
    app = App(outdir=str(tmp_path / "cdk.out"))
    stack = Stack(app, "Hosting")
    ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_directory(model_dir),
        code=SourceCode.from_directory(EXAMPLE, "train.py"),
        model_server_workers=1,
    )
    app.synth()
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "chainer_sagemaker_cdk.local",
         "--cdk-out", str(tmp_path / "cdk.out"),
         "serve", "--port", str(port), "--work-dir", str(tmp_path / "work")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None
        first = server.stdout.readline()  # printed once /ping answers
        assert f"serving /Hosting/Model at http://127.0.0.1:{port}" in first, first
        with Predictor.local(f"http://127.0.0.1:{port}") as predictor:
            scores = predictor.predict(np.zeros((2, 784), dtype=np.float32))
        assert scores.shape == (2, 10)
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
