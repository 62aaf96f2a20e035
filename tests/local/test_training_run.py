"""Starting and following pipeline runs, against moto's standalone server on loopback."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from support import moto_server

from chainer_sagemaker_cdk.client import TrainingRun, TrainingRunError, execution_input

CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.fixture(scope="module")
def aws() -> Iterator[dict[str, Any]]:
    import boto3

    with moto_server() as url:

        def client(name: str) -> Any:
            return boto3.client(name, endpoint_url=url, region_name="us-east-1", **CREDS)

        yield {"sfn_client": client("stepfunctions"), "logs_client": client("logs")}


@pytest.fixture(scope="module")
def state_machine(aws: dict[str, Any]) -> str:
    definition = {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}
    created = aws["sfn_client"].create_state_machine(
        name="digits-pipeline",
        definition=json.dumps(definition),
        roleArn="arn:aws:iam::123456789012:role/pipeline",
    )
    return str(created["stateMachineArn"])


def test_input_encodes_hyperparameters_like_the_sdk_and_s3_uri_means_train() -> None:
    assert execution_input(
        "s3://bucket/digits/train", hyperparameters={"epochs": 3, "opt": "adam"}, job_name="j-1"
    ) == {
        "Channels": {"train": "s3://bucket/digits/train"},
        "Hyperparameters": {"epochs": "3", "opt": '"adam"'},
        "TrainingJobName": "j-1",
    }
    with pytest.raises(ValueError, match="must be s3:// URIs"):
        execution_input({"train": "/local/dir"})


def test_start_sends_the_input_and_attach_reads_the_job_name(
    aws: dict[str, Any], state_machine: str
) -> None:
    clients = {k: aws[k] for k in ("sfn_client", "logs_client")}
    run = TrainingRun.start(
        state_machine,
        {"train": "s3://b/train", "test": "s3://b/test"},
        hyperparameters={"epochs": 2},
        job_name="digits-run-1",
        **clients,
    )
    sent = json.loads(run.describe()["input"])
    assert sent["Channels"] == {"train": "s3://b/train", "test": "s3://b/test"}
    assert sent["Hyperparameters"] == {"epochs": "2"}
    assert TrainingRun.attach(run.execution_arn, **clients).training_job_name() == "digits-run-1"


def test_wait_streams_the_jobs_logs_and_reports_an_aborted_run(
    aws: dict[str, Any], state_machine: str
) -> None:
    logs = aws["logs_client"]
    group = "/aws/sagemaker/TrainingJobs"
    logs.create_log_group(logGroupName=group)
    logs.create_log_stream(logGroupName=group, logStreamName="digits-run-2/algo-1-1700000000")
    now = int(time.time() * 1000)
    logs.put_log_events(
        logGroupName=group,
        logStreamName="digits-run-2/algo-1-1700000000",
        logEvents=[
            {"timestamp": now, "message": "epoch 1"},
            {"timestamp": now + 1, "message": "done"},
        ],
    )
    run = TrainingRun.start(
        state_machine, job_name="digits-run-2", sfn_client=aws["sfn_client"], logs_client=logs
    )
    stopper = threading.Timer(
        0.5,
        lambda: aws["sfn_client"].stop_execution(executionArn=run.execution_arn, cause="stopped"),
    )
    stopper.start()
    lines: list[str] = []
    try:
        if run.status in ("SUCCEEDED",):  # an emulator that runs Pass states at once
            run.wait(poll=0.1, timeout=20, out=lines.append)
        else:
            with pytest.raises(TrainingRunError) as caught:
                run.wait(poll=0.1, timeout=20, out=lines.append)
            assert caught.value.status == "ABORTED"
    finally:
        stopper.cancel()
    assert lines[:2] == ["[algo-1-1700000000] epoch 1", "[algo-1-1700000000] done"]
