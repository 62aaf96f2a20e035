"""Starting and following a ``TrainingPipeline`` execution (boto3 only).

``fit()`` is the SageMaker SDK's ``estimator.fit(inputs, wait, logs, job_name)`` for a deployed
pipeline: it starts the state machine with the channels and hyperparameters of this run, and
optionally waits, streaming the training job's CloudWatch logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["TrainingRun", "TrainingRunError", "execution_input", "fit"]

LOG_GROUP = "/aws/sagemaker/TrainingJobs"
_DONE = {"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"}


class TrainingRunError(Exception):
    """The execution ended other than SUCCEEDED; ``status`` and ``cause`` say how."""

    def __init__(self, status: str, cause: str) -> None:
        super().__init__(f"pipeline execution {status}: {cause}")
        self.status = status
        self.cause = cause


def execution_input(
    inputs: str | Mapping[str, str] | None = None,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    job_name: str | None = None,
) -> dict[str, Any]:
    """The state machine input: an S3 URI is channel ``train`` (as in the SDK); hyperparameter
    values are JSON-encoded as the SDK encodes them."""
    payload: dict[str, Any] = {}
    if inputs is not None:
        channels = {"train": inputs} if isinstance(inputs, str) else dict(inputs)
        bad = {k: v for k, v in channels.items() if not str(v).startswith("s3://")}
        if bad:
            raise ValueError(f"channel inputs must be s3:// URIs, got {bad}")
        payload["Channels"] = channels
    if hyperparameters:
        payload["Hyperparameters"] = {k: json.dumps(v) for k, v in hyperparameters.items()}
    if job_name:
        payload["TrainingJobName"] = job_name
    return payload


class TrainingRun:
    """One execution of a training pipeline."""

    def __init__(
        self, execution_arn: str, *, sfn_client: Any = None, logs_client: Any = None
    ) -> None:
        import boto3

        self.execution_arn = execution_arn
        self._sfn = sfn_client or boto3.client("stepfunctions")
        self._logs = logs_client
        self._log_tokens: dict[str, int] = {}

    @classmethod
    def start(
        cls,
        state_machine_arn: str,
        inputs: str | Mapping[str, str] | None = None,
        *,
        hyperparameters: Mapping[str, Any] | None = None,
        job_name: str | None = None,
        sfn_client: Any = None,
        logs_client: Any = None,
    ) -> TrainingRun:
        import boto3

        sfn = sfn_client or boto3.client("stepfunctions")
        payload = execution_input(inputs, hyperparameters=hyperparameters, job_name=job_name)
        kwargs: dict[str, Any] = {
            "stateMachineArn": state_machine_arn,
            "input": json.dumps(payload),
        }
        if job_name:
            kwargs["name"] = job_name
        started = sfn.start_execution(**kwargs)
        return cls(started["executionArn"], sfn_client=sfn, logs_client=logs_client)

    @classmethod
    def attach(cls, execution_arn: str, **clients: Any) -> TrainingRun:
        """Follow an execution started elsewhere (the SDK's ``attach``)."""
        return cls(execution_arn, **clients)

    def describe(self) -> dict[str, Any]:
        return dict(self._sfn.describe_execution(executionArn=self.execution_arn))

    @property
    def status(self) -> str:
        return str(self.describe()["status"])

    def training_job_name(self) -> str | None:
        """The job name: from the execution input, else from the scheduled training task."""
        given = json.loads(self.describe().get("input") or "{}").get("TrainingJobName")
        if given:
            return str(given)
        pages = self._sfn.get_paginator("get_execution_history").paginate(
            executionArn=self.execution_arn
        )
        for page in pages:
            for event in page.get("events", []):
                details = event.get("taskScheduledEventDetails") or {}
                if str(details.get("resource", "")).startswith("createTrainingJob"):
                    name = json.loads(details.get("parameters") or "{}").get("TrainingJobName")
                    if name:
                        return str(name)
        return None

    def _print_new_logs(self, job_name: str, out: Callable[[str], None]) -> None:
        if self._logs is None:
            import boto3

            self._logs = boto3.client("logs")
        kwargs: dict[str, Any] = {
            "logGroupName": LOG_GROUP,
            "logStreamNamePrefix": f"{job_name}/",
            "startTime": self._log_tokens.get(job_name, 0),
        }
        try:
            pages = self._logs.get_paginator("filter_log_events").paginate(**kwargs)
            for page in pages:
                for event in page.get("events", []):
                    out(f"[{event['logStreamName'].split('/', 1)[-1]}] {event['message']}")
                    self._log_tokens[job_name] = max(
                        self._log_tokens.get(job_name, 0), int(event["timestamp"]) + 1
                    )
        except self._logs.exceptions.ResourceNotFoundException:
            return  # the job has not written logs yet

    def wait(
        self,
        *,
        logs: bool = True,
        poll: float = 15.0,
        timeout: float | None = None,
        out: Callable[[str], None] = print,
    ) -> dict[str, Any]:
        """Wait for the execution to end; raise :class:`TrainingRunError` unless it succeeded."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            described = self.describe()
            status = str(described["status"])
            if logs:
                job = self.training_job_name()
                if job:
                    self._print_new_logs(job, out)
            if status in _DONE:
                if status != "SUCCEEDED":
                    cause = described.get("cause") or described.get("error") or "no cause given"
                    raise TrainingRunError(status, str(cause))
                return described
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"{self.execution_arn} still {status} after {timeout} s")
            time.sleep(poll)


def fit(
    state_machine_arn: str,
    inputs: str | Mapping[str, str] | None = None,
    *,
    wait: bool = True,
    logs: bool = True,
    job_name: str | None = None,
    hyperparameters: Mapping[str, Any] | None = None,
    poll: float = 15.0,
    **clients: Any,
) -> TrainingRun:
    """Start a pipeline run, like the SDK's ``estimator.fit``; wait for it when ``wait``
    (checking every ``poll`` seconds). The caller needs ``TrainingPipeline.grant_wait``."""
    run = TrainingRun.start(
        state_machine_arn, inputs, hyperparameters=hyperparameters, job_name=job_name, **clients
    )
    if wait:
        run.wait(logs=logs, poll=poll)
    return run
