"""Hyperparameters equal what the SageMaker Python SDK's Chainer estimator sends.

The SDK (``Framework._json_encode_hyperparameters`` and ``Chainer.hyperparameters``) sends
``{str(k): json.dumps(v)}`` for the user's values and its reserved keys, and drops falsy MPI
options. Each row below is the literal map the SDK produces for the same inputs.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from chainer_sagemaker_cdk import MpiOptions, encode_hyperparameters, reserved_hyperparameters

USER_CASES: list[tuple[dict[Any, Any], dict[str, str]]] = [
    ({"epochs": 10}, {"epochs": "10"}),
    ({"lr": 0.01}, {"lr": "0.01"}),
    ({"lr": 1e-05}, {"lr": "1e-05"}),
    ({"flag": True, "off": False}, {"flag": "true", "off": "false"}),
    ({"optimizer": "adam"}, {"optimizer": '"adam"'}),
    ({"layers": [64, 32]}, {"layers": "[64, 32]"}),
    ({"nested": {"a": 1, "b": "x"}}, {"nested": '{"a": 1, "b": "x"}'}),
    ({"none": None}, {"none": "null"}),
    ({"name": "caf\u00e9"}, {"name": '"caf\\u00e9"'}),
    ({"batch-size": 64}, {"batch-size": "64"}),
    ({1: "one"}, {"1": '"one"'}),
]


@pytest.mark.parametrize(("given", "sent"), USER_CASES)
def test_user_hyperparameters(given: dict[Any, Any], sent: dict[str, str]) -> None:
    assert encode_hyperparameters(given) == sent


BASE = {
    "sagemaker_program": '"train.py"',
    "sagemaker_submit_directory": '"s3://bucket/job/source/sourcedir.tar.gz"',
    "sagemaker_enable_cloudwatch_metrics": "false",
    "sagemaker_container_log_level": "20",
    "sagemaker_job_name": '"job-1"',
    "sagemaker_region": '"us-west-2"',
}

MPI_CASES: list[tuple[MpiOptions, dict[str, str]]] = [
    (MpiOptions(), {}),
    (MpiOptions(use_mpi=True), {"sagemaker_use_mpi": "true"}),
    (MpiOptions(use_mpi=False), {}),
    (MpiOptions(num_processes=0, process_slots_per_host=0, additional_mpi_options=""), {}),
    (
        MpiOptions(
            use_mpi=True,
            num_processes=4,
            process_slots_per_host=2,
            additional_mpi_options="-x NCCL_DEBUG=WARN",
        ),
        {
            "sagemaker_use_mpi": "true",
            "sagemaker_num_processes": "4",
            "sagemaker_process_slots_per_host": "2",
            "sagemaker_additional_mpi_options": '"-x NCCL_DEBUG=WARN"',
        },
    ),
]


@pytest.mark.parametrize(("mpi", "extra"), MPI_CASES)
def test_reserved_keys_and_mpi_options(mpi: MpiOptions, extra: dict[str, str]) -> None:
    sent = reserved_hyperparameters(
        entry_point="train.py",
        submit_directory="s3://bucket/job/source/sourcedir.tar.gz",
        container_log_level=logging.INFO,
        region="us-west-2",
        job_name="job-1",
        mpi=mpi,
    )
    assert sent == {**BASE, **extra}


def test_log_level_and_metrics_flags() -> None:
    sent = reserved_hyperparameters(
        entry_point="train.py",
        submit_directory="s3://b/k",
        container_log_level=logging.DEBUG,
        region="eu-west-1",
        job_name=None,
        enable_cloudwatch_metrics=True,
    )
    assert sent["sagemaker_container_log_level"] == "10"
    assert sent["sagemaker_enable_cloudwatch_metrics"] == "true"
    assert "sagemaker_job_name" not in sent  # filled per execution by the pipeline


def test_pipeline_sends_the_same_map(example_definition: dict[str, Any]) -> None:
    """The example app's job: user values as in the SDK, reserved keys beside them."""
    config = example_definition["States"]["ResolveConfig"]["Parameters"]["config"]
    defaults = example_definition["States"]["Defaults"]["Parameters"]["defaults"]
    assert defaults["Hyperparameters"] == {"epochs": "10", "batch-size": "64", "units": "1000"}
    reserved = config["ReservedHyperparameters"]
    assert reserved["sagemaker_program"] == '"train.py"'
    assert reserved["sagemaker_region"] == '"us-east-1"'
    assert reserved["sagemaker_submit_directory"].startswith('"s3://')
    assert reserved["sagemaker_job_name.$"] == "States.JsonToString($.merged.TrainingJobName)"
    assert reserved["sagemaker_container_log_level"] == "20"
    assert reserved["sagemaker_enable_cloudwatch_metrics"] == "false"


def test_estimator_request_equals_the_sdk_map() -> None:
    """Chainer(entry_point="train.py", hyperparameters={...}, use_mpi=True, num_processes=4,
    process_slots_per_host=2, additional_mpi_options="-x A", container_log_level=20) fitted as
    job "job-1" in us-west-2 with code at s3://code-bucket/job-1/source/sourcedir.tar.gz sends
    exactly this map (sagemaker 1.72.0, Framework._prepare_for_training + Chainer.hyperparameters).
    """
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    from chainer_sagemaker_cdk import ChainerEstimator, RuntimeImage, SourceCode

    stack = cdk.Stack(
        cdk.App(), "Sdk", env=cdk.Environment(account="123456789012", region="us-west-2")
    )
    bucket = s3.Bucket.from_bucket_name(stack, "Code", "code-bucket")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_bucket(bucket, "job-1/source/sourcedir.tar.gz", "train.py"),
        image=RuntimeImage.from_registry("registry.example/chainer:5"),
        hyperparameters={
            "epochs": 10,
            "lr": 0.01,
            "optimizer": "adam",
            "layers": [64, 32],
            "verbose": True,
        },
        use_mpi=True,
        num_processes=4,
        process_slots_per_host=2,
        additional_mpi_options="-x A",
        output_bucket=bucket,
    )
    sent = stack.resolve(estimator.training_job_request("job-1"))["HyperParameters"]
    assert sent == {
        "epochs": "10",
        "lr": "0.01",
        "optimizer": '"adam"',
        "layers": "[64, 32]",
        "verbose": "true",
        "sagemaker_submit_directory": '"s3://code-bucket/job-1/source/sourcedir.tar.gz"',
        "sagemaker_program": '"train.py"',
        "sagemaker_enable_cloudwatch_metrics": "false",
        "sagemaker_container_log_level": "20",
        "sagemaker_job_name": '"job-1"',
        "sagemaker_region": '"us-west-2"',
        "sagemaker_use_mpi": "true",
        "sagemaker_num_processes": "4",
        "sagemaker_process_slots_per_host": "2",
        "sagemaker_additional_mpi_options": '"-x A"',
    }


SDK_CASES: list[dict[str, Any]] = [
    {
        "hyperparameters": {
            "epochs": 10,
            "lr": 0.01,
            "optimizer": "adam",
            "layers": [64, 32],
            "verbose": True,
        },
        "use_mpi": True,
        "num_processes": 4,
        "process_slots_per_host": 2,
        "additional_mpi_options": "-x A",
    },
    {
        "hyperparameters": {"none": None, "nested": {"a": 1, "b": "x"}, "name": "caf\u00e9"},
        "use_mpi": False,
        "num_processes": 0,
        "additional_mpi_options": "",
    },
    {
        "hyperparameters": {},
        "container_log_level": logging.DEBUG,
    },
]


def _ours(case: dict[str, Any]) -> dict[str, str]:
    import aws_cdk as cdk
    from aws_cdk import aws_s3 as s3

    from chainer_sagemaker_cdk import ChainerEstimator, RuntimeImage, SourceCode

    stack = cdk.Stack(
        cdk.App(), "Sdk", env=cdk.Environment(account="123456789012", region="us-west-2")
    )
    bucket = s3.Bucket.from_bucket_name(stack, "Code", "code-bucket")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        output_bucket=bucket,
        code=SourceCode.from_bucket(bucket, "job-1/source/sourcedir.tar.gz", "train.py"),
        image=RuntimeImage.from_registry("registry.example/chainer:5"),
        **case,
    )
    return stack.resolve(estimator.training_job_request("job-1"))["HyperParameters"]  # type: ignore[no-any-return]


def test_against_the_real_sdk(tmp_path: Path) -> None:
    """The same inputs through the SageMaker Python SDK 1.72.0 (`.venv-sdk`, made by setup)."""
    sdk_python = os.environ.get("SAGEMAKER_SDK_PYTHON") or str(
        Path(__file__).resolve().parents[2] / ".venv-sdk" / "bin" / "python"
    )
    assert Path(sdk_python).exists(), "run `make setup`: it creates .venv-sdk with sagemaker 1.72"
    cases = tmp_path / "cases.json"
    cases.write_text(json.dumps(SDK_CASES))
    out = subprocess.run(
        [
            sdk_python,
            str(Path(__file__).with_name("sdk_reference.py")),
            str(cases),
        ],
        env={**os.environ, "PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"},
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    expected = json.loads(out.stdout.strip().splitlines()[-1])
    assert [_ours(case) for case in SDK_CASES] == expected
