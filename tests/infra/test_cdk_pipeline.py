"""The pipeline's states: train (.sync) -> model -> config -> create or update -> InService."""

from __future__ import annotations

import itertools
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_stepfunctions as sfn

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    RuntimeImage,
    SourceCode,
    TrainingPipelineFragment,
)

from .render import state_machine_definition


def test_flow(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    assert example_definition["StartAt"] == "Defaults"
    order = [
        "Defaults",
        "ApplyInput",
        "ResolveConfig",
        "Train",
        "CreateModel",
        "CreateEndpointConfig",
        "FindEndpoint",
        "UpdateEndpoint",
        "WaitForEndpoint",
        "DescribeEndpoint",
        "EndpointStatus",
    ]
    for here, after in itertools.pairwise(order):
        if here != "EndpointStatus":
            assert states[here]["Next"] == after, here
    assert states["FindEndpoint"]["Catch"] == [
        {"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.notFound", "Next": "CreateEndpoint"}
    ]
    assert states["CreateEndpoint"]["Next"] == "WaitForEndpoint"
    assert states["EndpointInService"]["End"] is True
    assert states["EndpointFailed"] == {
        "Type": "Fail",
        "Error": "EndpointDeploymentFailed",
        "CausePath": "$.status.FailureReason",
    }


def test_wait_loop_choices(example_definition: dict[str, Any]) -> None:
    choice = example_definition["States"]["EndpointStatus"]
    waiting, in_service, failed = choice["Choices"]
    assert {c["StringEquals"] for c in waiting["Or"]} == {"Creating", "Updating", "SystemUpdating"}
    assert waiting["Next"] == "WaitForEndpoint"
    assert in_service["And"][1] == {
        "Variable": "$.status.EndpointConfigName",
        "StringEqualsPath": "$.config.TrainingJobName",
    }
    assert in_service["Next"] == "EndpointInService"
    assert failed == {
        "Variable": "$.status.FailureReason",
        "IsPresent": True,
        "Next": "EndpointFailed",
    }
    assert choice["Default"] == "EndpointNotUpdated"


def test_names_are_unique_per_execution(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    defaults = states["Defaults"]["Parameters"]["defaults"]
    assert "States.UUID()" in defaults["TrainingJobName.$"]
    assert states["Train"]["Parameters"]["TrainingJobName.$"] == "$.config.TrainingJobName"
    assert states["CreateModel"]["Parameters"]["ModelName.$"] == "$.config.TrainingJobName"
    config = states["CreateEndpointConfig"]["Parameters"]
    assert config["EndpointConfigName.$"] == "$.config.TrainingJobName"
    assert config["ProductionVariants"][0]["ModelName.$"] == "$.config.TrainingJobName"
    assert states["CreateModel"]["Parameters"]["PrimaryContainer"]["ModelDataUrl.$"] == (
        "$.training.ModelArtifacts"
    )
    assert states["Train"]["ResultSelector"] == {
        "TrainingJobName.$": "$.TrainingJobName",
        "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
    }


def test_execution_input_overrides(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    assert states["ApplyInput"]["Parameters"]["merged.$"] == (
        "States.JsonMerge($.defaults, $.input, false)"
    )
    config = states["ResolveConfig"]["Parameters"]["config"]
    assert config["Hyperparameters.$"] == (
        "States.JsonMerge($.defaults.Hyperparameters, $.merged.Hyperparameters, false)"
    )
    assert config["Channels.$"] == (
        "States.JsonMerge($.defaults.Channels, $.merged.Channels, false)"
    )
    train = states["Train"]["Parameters"]
    # reserved keys win over user overrides
    assert train["HyperParameters.$"] == (
        "States.JsonMerge($.config.Hyperparameters, $.config.ReservedHyperparameters, false)"
    )


def test_serving_model_matches_the_contract(example_definition: dict[str, Any]) -> None:
    model = example_definition["States"]["CreateModel"]["Parameters"]
    env = model["PrimaryContainer"]["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "train.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"].startswith("s3://")
    assert env["SAGEMAKER_REGION"] == "us-east-1"
    assert env["SAGEMAKER_CONTAINER_LOG_LEVEL"] == "20"
    assert env["SAGEMAKER_ENABLE_CLOUDWATCH_METRICS"] == "false"


def test_every_task_takes_retry_and_catch(code_dir: Any) -> None:
    stack = cdk.Stack(cdk.App(), "Fragment")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("registry.example/c:1"),
    )
    fragment = TrainingPipelineFragment(stack, "Train", estimator=estimator)
    failed = sfn.Fail(stack, "MyFailure")
    for task in fragment.tasks:
        task.add_retry(errors=["ThrottlingException"], max_attempts=5)
        task.add_catch(failed, errors=["States.ALL"])
    done = sfn.Succeed(stack, "Done")
    machine = sfn.StateMachine(
        stack,
        "Mine",
        definition_body=sfn.DefinitionBody.from_chainable(
            sfn.Pass(stack, "Start").next(fragment).next(done)
        ),
    )
    fragment.grant_run(machine)
    definition = state_machine_definition(cdk.assertions.Template.from_stack(stack).to_json())
    assert len(fragment.tasks) == 7
    for name in (
        "Train",
        "CreateModel",
        "CreateEndpointConfig",
        "FindEndpoint",
        "CreateEndpoint",
        "UpdateEndpoint",
        "DescribeEndpoint",
    ):
        state = definition["States"][name]
        assert state["Retry"][0]["ErrorEquals"] == ["ThrottlingException"], name
        assert state["Catch"][-1]["Next"] == "MyFailure", name
    assert definition["States"]["EndpointInService"]["Next"] == "Done"
    assert definition["StartAt"] == "Start"


def test_training_only_fragment_grants_only_training(code_dir: Any) -> None:
    stack = cdk.Stack(cdk.App(), "TrainOnly")
    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("registry.example/c:1"),
    )
    fragment = TrainingPipelineFragment(stack, "Train", estimator=estimator, deploy=False)
    machine = sfn.StateMachine(
        stack, "Mine", definition_body=sfn.DefinitionBody.from_chainable(fragment)
    )
    fragment.grant_run(machine)
    text = str(cdk.assertions.Template.from_stack(stack).to_json())
    assert "sagemaker:CreateTrainingJob" in text
    assert "sagemaker:CreateModel" not in text
    assert "sagemaker:CreateEndpoint" not in text


def _lint_definition(definition: dict[str, Any]) -> list[str]:
    """cfn-lint's States Language rule (E3601) on a definition given as an object: cfn-lint
    skips a DefinitionString built with Fn::Join, so the placeholders are filled first."""
    import json

    from cfnlint.api import ManualArgs, lint

    template = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Resources": {
            "Machine": {
                "Type": "AWS::StepFunctions::StateMachine",
                "Properties": {
                    "RoleArn": "arn:aws:iam::123456789012:role/sm",
                    "Definition": definition,
                },
            }
        },
    }
    matches = lint(json.dumps(template), config=ManualArgs(regions=["us-east-1"]))
    return [f"{m.rule.id} {m.message}" for m in matches if m.rule.id.startswith("E")]


def test_definitions_pass_the_states_language_rule(
    example_definition: dict[str, Any], maximal_definition: dict[str, Any]
) -> None:
    assert _lint_definition(example_definition) == []
    assert _lint_definition(maximal_definition) == []
    broken = {"StartAt": "A", "States": {"A": {"Type": "Task", "End": True}}}
    assert _lint_definition(broken)  # the rule does look
