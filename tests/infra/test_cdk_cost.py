"""Cost guardrails (issue 14, item 6): the instance-hours a training run is billed at most."""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import Duration

from chainer_sagemaker_cdk import ChainerEstimator, RuntimeImage, SourceCode


def _estimator(code: SourceCode, image: RuntimeImage, **props: object) -> ChainerEstimator:
    stack = cdk.Stack(cdk.App(), "Cost")
    return ChainerEstimator(stack, "E", code=code, image=image, **props)  # type: ignore[arg-type]


def test_on_demand_bound_is_max_run_times_instances(
    code: SourceCode, registry_image: RuntimeImage
) -> None:
    est = _estimator(code, registry_image, instance_count=4, max_run=Duration.hours(5))
    assert est.max_instance_hours == 20
    assert est.max_duration.to_hours() == 5
    request = est.stack.resolve(est.training_job_request("job"))
    stop, resources = request["StoppingCondition"], request["ResourceConfig"]
    assert est.max_instance_hours == (
        stop["MaxRuntimeInSeconds"] * resources["InstanceCount"] / 3600
    )


def test_spot_waits_are_not_billed_but_lengthen_the_run(
    code: SourceCode, registry_image: RuntimeImage
) -> None:
    est = _estimator(
        code, registry_image, instance_count=2, max_run=Duration.hours(3), use_spot_instances=True
    )
    assert est.max_instance_hours == 6
    assert est.max_duration.to_hours() == 6  # max_wait's default: twice max_run
    assert _estimator(code, registry_image).max_instance_hours == 24  # 1 x 24 h defaults


def test_a_deploy_time_count_has_no_bound(code: SourceCode, registry_image: RuntimeImage) -> None:
    stack = cdk.Stack(cdk.App(), "Token")
    count = cdk.CfnParameter(stack, "Count", type="Number").value_as_number
    est = ChainerEstimator(stack, "E", code=code, image=registry_image, instance_count=count)
    assert est.max_instance_hours is None
