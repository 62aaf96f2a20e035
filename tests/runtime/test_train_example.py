"""The digits example trains through the real `train` command, single process and under MPI.

Marked `compat`: `make compat` runs these again on NumPy 1.26 and on Python 3.12.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jobtree import EXAMPLE, JobTree

pytestmark = pytest.mark.compat

# Stated in the README: the example reaches at least this test accuracy on digits.
MIN_ACCURACY = 0.9


def _metrics(job: JobTree) -> dict[str, float]:
    return json.loads((job.output / "data" / "metrics.json").read_text())


def test_example_trains_on_a_fresh_tree_and_saves_the_model(
    job: JobTree, digits_channels: dict[str, Path]
) -> None:
    job.configure(
        {
            "sagemaker_program": "train.py",
            "sagemaker_submit_directory": str(EXAMPLE),
            "epochs": 5,
            "batch-size": 64,
        },
        channels=digits_channels,
    )
    result = job.train()
    assert result.returncode == 0, result.stderr[-3000:]
    assert (job.output / "success").exists()
    assert not (job.output / "failure").exists()
    assert (job.model / "model.npz").stat().st_size > 1_000_000  # 784-1000-1000-10 weights
    assert _metrics(job)["test_accuracy"] >= MIN_ACCURACY
    assert _metrics(job)["epochs"] == 5  # the hyperparameter reached the script's argv


def test_chainermn_example_runs_under_mpirun_with_two_ranks(
    job: JobTree, digits_channels: dict[str, Path]
) -> None:
    job.configure(
        {
            "sagemaker_program": "train_mn.py",
            "sagemaker_submit_directory": str(EXAMPLE),
            "sagemaker_use_mpi": True,
            "sagemaker_process_slots_per_host": 2,
            "epochs": 3,
        },
        channels=digits_channels,
    )
    result = job.train()
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "rank 0 of 2" in out
    assert "rank 1 of 2" in out
    assert "rank 0 done" in out
    assert "rank 1 done" in out
    assert out.count("test accuracy:") == 1  # only rank 0 evaluates and saves
    assert (job.model / "model.npz").exists()
    metrics = _metrics(job)
    assert metrics["ranks"] == 2
    assert metrics["test_accuracy"] >= MIN_ACCURACY
    assert (job.output / "success").exists()


def test_unmodified_sagemaker_containers_script_reads_its_environment(
    job: JobTree, code_dir: Path, digits_channels: dict[str, Path]
) -> None:
    (code_dir / "legacy.py").write_text(
        "import json, os, chainer, sagemaker_containers\n"
        "env = sagemaker_containers.training_env()\n"
        "keys = ['num_gpus', 'current_host', 'hosts', 'model_dir', 'output_data_dir',\n"
        "        'channel_input_dirs', 'hyperparameters']\n"
        "out = {k: getattr(env, k) for k in keys}\n"
        "json.dump(out, open(os.path.join(env.model_dir, 'env.json'), 'w'))\n"
    )
    job.configure(
        {"sagemaker_program": "legacy.py", "sagemaker_submit_directory": str(code_dir), "lr": 0.1},
        channels=digits_channels,
    )
    result = job.train()
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads((job.model / "env.json").read_text())
    assert seen == {
        "num_gpus": 0,
        "current_host": "algo-1",
        "hosts": ["algo-1"],
        "model_dir": str(job.model),
        "output_data_dir": str(job.output / "data"),
        "channel_input_dirs": {
            "test": str(job.base / "input" / "data" / "test"),
            "train": str(job.base / "input" / "data" / "train"),
        },
        "hyperparameters": {"lr": 0.1},
    }
