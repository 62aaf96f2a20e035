"""Rolling updates (``DeploymentGuardrails(traffic="ROLLING")``): the ``RollingUpdatePolicy``
UpdateEndpoint gets, checked against botocore's model, and the combinations SageMaker refuses
(https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-rolling.html,
https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html)."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import Duration

from chainer_sagemaker_cdk import ChainerValidationError
from chainer_sagemaker_cdk.guardrails import DeploymentGuardrails

from .test_cdk_botocore import MODEL, _validate

UPDATE = MODEL.operation_model("UpdateEndpoint")


def _update(config: dict[str, Any]) -> dict[str, Any]:
    return {"EndpointName": "digits", "EndpointConfigName": "digits-1", "DeploymentConfig": config}


def test_rolling_update_policy_replaces_the_blue_green_policy() -> None:
    guardrails = DeploymentGuardrails(
        traffic="ROLLING",
        batch_size=2,
        batch_type="INSTANCE_COUNT",
        rollback_batch_size=4,
        wait_interval=Duration.minutes(3),
        maximum_execution_timeout=Duration.hours(1),
    )
    guardrails.validate()
    guardrails.validate_for(instance_count=4, serverless=False)
    config = guardrails.deployment_config(["digits-5xx"])
    assert config == {
        "RollingUpdatePolicy": {
            "MaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 2},
            "WaitIntervalInSeconds": 180,
            "MaximumExecutionTimeoutInSeconds": 3600,
            "RollbackMaximumBatchSize": {"Type": "INSTANCE_COUNT", "Value": 4},
        },
        "AutoRollbackConfiguration": {"Alarms": [{"AlarmName": "digits-5xx"}]},
    }
    assert _validate(UPDATE, _update(config)) == []


def test_rolling_defaults_to_a_quarter_of_the_fleet() -> None:
    config = DeploymentGuardrails(traffic="ROLLING").deployment_config(["a"])
    assert config["RollingUpdatePolicy"] == {
        "MaximumBatchSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        "WaitIntervalInSeconds": 300,
    }
    assert _validate(UPDATE, _update(config)) == []


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"batch_size": 60}, "5 to 50 percent"),
        ({"batch_size": 4}, "5 to 50 percent"),
        ({"batch_type": "INSTANCES"}, "use one of"),
        ({"batch_type": "INSTANCE_COUNT", "batch_size": 0}, "use 1 or more"),
        ({"rollback_batch_size": 101}, "at most 100"),
        ({"termination_wait": Duration.minutes(1)}, "batch by batch"),
    ],
)
def test_bad_rolling_values_fail_naming_the_fix(props: dict[str, Any], message: str) -> None:
    with pytest.raises(ChainerValidationError, match=message):
        DeploymentGuardrails(traffic="ROLLING", **props).validate()


@pytest.mark.parametrize(
    ("props", "endpoint", "message"),
    [
        ({}, {"instance_count": 1, "serverless": False}, "use 2 or more instances"),
        ({}, {"instance_count": None, "serverless": True}, "serverless endpoints cannot"),
        (
            {"batch_type": "INSTANCE_COUNT", "batch_size": 3},
            {"instance_count": 4, "serverless": False},
            "use 1 to 2",
        ),
    ],
)
def test_rolling_needs_an_endpoint_that_can_roll(
    props: dict[str, Any], endpoint: dict[str, Any], message: str
) -> None:
    with pytest.raises(ChainerValidationError, match=message):
        DeploymentGuardrails(traffic="ROLLING", **props).validate_for(**endpoint)


def test_blue_green_fits_any_endpoint() -> None:
    DeploymentGuardrails(traffic="CANARY").validate_for(instance_count=1, serverless=True)
