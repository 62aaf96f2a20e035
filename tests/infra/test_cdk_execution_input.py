"""Run the pipeline's prepare states on sample execution input (a small ASL evaluator) and
check the CreateTrainingJob parameters the Train state would send."""

from __future__ import annotations

import re
from typing import Any

import pytest

from .sfn_eval import choose, render, run_pass

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def _train_parameters(definition: dict[str, Any], execution_input: Any) -> dict[str, Any]:
    states = definition["States"]
    data = execution_input
    for name in ("Defaults", "ApplyInput", "ResolveConfig"):
        data = run_pass(states[name], data)
    return render(states["Train"]["Parameters"], data)  # type: ignore[no-any-return]


def test_defaults(example_definition: dict[str, Any]) -> None:
    params = _train_parameters(example_definition, {})
    name = params["TrainingJobName"]
    assert re.fullmatch(f"chainer-digits-{UUID}", name)
    assert len(name) <= 63
    hps = params["HyperParameters"]
    assert hps["epochs"] == "10"
    assert hps["sagemaker_job_name"] == f'"{name}"'
    assert hps["sagemaker_program"] == '"train.py"'
    uris = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in params["InputDataConfig"]
    }
    assert uris["train"].endswith("/digits/train")
    assert uris["test"].endswith("/digits/test")


def test_names_differ_per_execution(example_definition: dict[str, Any]) -> None:
    first = _train_parameters(example_definition, {})["TrainingJobName"]
    second = _train_parameters(example_definition, {})["TrainingJobName"]
    assert first != second


def test_overrides_merge_per_key(example_definition: dict[str, Any]) -> None:
    params = _train_parameters(
        example_definition,
        {
            "TrainingJobName": "chainer-digits-exp-7",
            "Hyperparameters": {"epochs": "20", "dropout": "0.5"},
            "Channels": {"train": "s3://other-bucket/train-v2"},
        },
    )
    assert params["TrainingJobName"] == "chainer-digits-exp-7"
    hps = params["HyperParameters"]
    assert (hps["epochs"], hps["dropout"], hps["units"]) == ("20", "0.5", "1000")
    assert hps["sagemaker_job_name"] == '"chainer-digits-exp-7"'
    uris = {
        c["ChannelName"]: c["DataSource"]["S3DataSource"]["S3Uri"]
        for c in params["InputDataConfig"]
    }
    assert uris["train"] == "s3://other-bucket/train-v2"
    assert uris["test"].endswith("/digits/test")  # the other channel keeps its default


def test_reserved_keys_cannot_be_overridden(example_definition: dict[str, Any]) -> None:
    params = _train_parameters(
        example_definition, {"Hyperparameters": {"sagemaker_program": '"evil.py"'}}
    )
    assert params["HyperParameters"]["sagemaker_program"] == '"train.py"'


@pytest.mark.parametrize("extra", [{"unrelated": 1}, {"Channels": {}}, {"Hyperparameters": {}}])
def test_unrelated_or_empty_input(
    example_definition: dict[str, Any], extra: dict[str, Any]
) -> None:
    params = _train_parameters(example_definition, extra)
    assert params["HyperParameters"]["epochs"] == "10"
    assert len(params["InputDataConfig"]) == 2


def test_model_and_config_take_the_job_name(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    data: Any = {"Hyperparameters": {}}
    for name in ("Defaults", "ApplyInput", "ResolveConfig"):
        data = run_pass(states[name], data)
    data["training"] = {"TrainingJobName": "x", "ModelArtifacts": "s3://a/x/output/model.tar.gz"}
    model = render(states["CreateModel"]["Parameters"], data)
    config = render(states["CreateEndpointConfig"]["Parameters"], data)
    name = data["config"]["TrainingJobName"]
    assert model["ModelName"] == config["EndpointConfigName"] == name
    assert config["ProductionVariants"][0]["ModelName"] == name
    assert model["PrimaryContainer"]["ModelDataUrl"] == "s3://a/x/output/model.tar.gz"


@pytest.mark.parametrize(
    ("status", "next_state"),
    [
        ({"EndpointStatus": "Creating", "EndpointConfigName": "job"}, "WaitForEndpoint"),
        ({"EndpointStatus": "Updating", "EndpointConfigName": "old"}, "WaitForEndpoint"),
        ({"EndpointStatus": "SystemUpdating", "EndpointConfigName": "job"}, "WaitForEndpoint"),
        ({"EndpointStatus": "InService", "EndpointConfigName": "job"}, "EndpointInService"),
        # an update that rolled back: in service, but with the previous config
        ({"EndpointStatus": "InService", "EndpointConfigName": "old"}, "EndpointNotUpdated"),
        (
            {
                "EndpointStatus": "Failed",
                "EndpointConfigName": "job",
                "FailureReason": "Image not found",
            },
            "EndpointFailed",
        ),
        (
            {
                "EndpointStatus": "RollingBack",
                "EndpointConfigName": "job",
                "FailureReason": "Health check failed",
            },
            "EndpointFailed",
        ),
        ({"EndpointStatus": "OutOfService", "EndpointConfigName": "job"}, "EndpointNotUpdated"),
    ],
)
def test_wait_loop(
    example_definition: dict[str, Any], status: dict[str, str], next_state: str
) -> None:
    data = {"config": {"TrainingJobName": "job"}, "status": status}
    assert choose(example_definition["States"]["EndpointStatus"], data) == next_state
