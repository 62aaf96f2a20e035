"""The pipeline's synthesized states and grants (their behaviour: test_sfn_execution.py)."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_stepfunctions as sfn

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    RuntimeImage,
    SourceCode,
    TrainingPipelineFragment,
)

from . import render
from .render import state_machine_definition


def _policy_statements(template: dict[str, Any], path_part: str) -> list[dict[str, Any]]:
    statements: list[dict[str, Any]] = []
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::ManagedPolicy" and path_part in logical_id:
            statements += resource["Properties"]["PolicyDocument"]["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> set[str]:
    actions = statement["Action"]
    return {actions} if isinstance(actions, str) else set(actions)


def test_sync_training_may_tag_and_list_tags_without_user_tags(
    example_template: dict[str, Any],
) -> None:
    """Step Functions tags the jobs it starts with .sync and lists their tags (aws-cdk #32294):
    the example's estimator has no tags, the grants must be there anyway."""
    statements = _policy_statements(example_template, "PipelinePolicy")
    training = [s for s in statements if "sagemaker:CreateTrainingJob" in _actions(s)]
    assert training
    assert {"sagemaker:AddTags", "sagemaker:ListTags"} <= set().union(
        *(_actions(s) for s in training)
    )


def test_serving_model_has_its_own_read_only_role(example_template: dict[str, Any]) -> None:
    """Serving reads the artifacts and the code; it cannot rewrite anything under models/."""
    statements = _policy_statements(example_template, "ServingPolicy")
    actions = set().union(*(_actions(s) for s in statements))
    assert "s3:GetObject" in actions
    assert not {"s3:PutObject", "s3:DeleteObject"} & actions
    assert not any(a.startswith("sagemaker:Create") for a in actions)
    pipeline = _policy_statements(example_template, "PipelinePolicy")
    passed = [s for s in pipeline if "iam:PassRole" in _actions(s)]
    text = json.dumps(passed)
    assert "EstimatorExecutionRole" in text  # the training job's role
    assert "PipelineServingRole" in text  # and the model's


def test_retriers_use_each_integrations_error_names(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    train = [e for r in states["Train"]["Retry"] for e in r["ErrorEquals"]]
    assert "SageMaker.AmazonSageMakerException" in train  # optimized integration
    assert "SageMaker.ResourceLimitExceededException" in train
    for name, state in states.items():
        if state.get("Type") == "Task" and ":aws-sdk:" in state["Resource"]:
            errors = [e for r in state["Retry"] for e in r["ErrorEquals"]]
            assert "SageMaker.ThrottlingException" in errors, name
            assert "SageMaker.AmazonSageMakerException" not in errors, name


def test_only_a_missing_endpoint_means_create(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    (catch,) = states["FindEndpoint"]["Catch"]
    choice = states[catch["Next"]]
    (missing,) = choice["Choices"]
    assert missing["Next"] == "CreateEndpoint"
    assert missing["And"][1] == {
        "Variable": "$.deployError.Cause",
        "StringMatches": "*Could not find endpoint*",
    }
    assert choice["Default"] == "DeploymentFailed"


def test_rolling_back_is_waited_on(example_definition: dict[str, Any]) -> None:
    waiting = example_definition["States"]["EndpointStatus"]["Choices"][0]
    assert {c["StringEquals"] for c in waiting["Or"]} == {
        "Creating",
        "Updating",
        "SystemUpdating",
        "RollingBack",
    }
    assert waiting["Next"] == "WaitForEndpoint"


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
        task.add_retry(errors=["MyError"], max_attempts=5)
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
    names = [t.node.id for t in fragment.tasks]
    assert len(names) == 9
    for name in names:
        state = definition["States"][name]
        # the default retriers come first; the user's follow
        assert state["Retry"][-1]["ErrorEquals"] == ["MyError"], name
        assert len(state["Retry"]) >= 2, name
        assert state["Catch"][-1]["Next"] == "MyFailure", name
    assert definition["States"]["Deployed"]["Next"] == "Done"
    assert definition["StartAt"] == "Start"


def test_serving_role_is_retained_with_the_endpoint_by_default(
    example_template: dict[str, Any],
) -> None:
    roles = {
        k: r
        for k, r in example_template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and "ServingRole" in k
    }
    (role,) = roles.values()
    assert role["DeletionPolicy"] == "Retain"
    assert not [
        r for r in example_template["Resources"].values() if r["Type"] == "Custom::AWS"
    ]  # no finalizer unless asked for


def _named_pipeline(stack: cdk.Stack, code_dir: Any, **props: Any) -> Any:
    from chainer_sagemaker_cdk import TrainingPipeline

    estimator = ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("registry.example/c:1"),
        base_job_name="digits",
    )
    return TrainingPipeline(stack, "P", estimator=estimator, endpoint_name="Digits-Prod", **props)


def test_destroy_policy_adds_a_compliant_endpoint_finalizer(code_dir: Any, tmp_path: Any) -> None:
    """Its function has its own role and managed policy (as the model-data lookup): clean under
    the three cdk-nag packs, with autoscaling's grants too."""
    from aws_cdk import RemovalPolicy

    from chainer_sagemaker_cdk.pipeline import InvocationScaling

    from .conftest import nag_app

    app = nag_app(tmp_path)
    stack = cdk.Stack(app, "Destroy")
    pipeline = _named_pipeline(
        stack,
        code_dir,
        endpoint_removal_policy=RemovalPolicy.DESTROY,
        autoscaling=InvocationScaling(max_capacity=2, invocations_per_instance=100),
    )
    bucket = pipeline.fragment.estimator.output_bucket.node.default_child
    assert bucket is not None
    cdk.Validations.of(bucket).acknowledge(
        *[
            cdk.Acknowledgment(id=finding, reason="the test's bucket, not the finalizer")
            for finding in (
                "AwsSolutions-S1",
                "HIPAA.Security-S3BucketLoggingEnabled",
                "HIPAA.Security-S3BucketReplicationEnabled",
                "NIST.800.53.R5-S3BucketLoggingEnabled",
                "NIST.800.53.R5-S3BucketReplicationEnabled",
            )
        ]
    )
    template = app.synth().get_stack_by_name("Destroy").template  # raises on a finding
    (finalizer,) = [r for r in template["Resources"].values() if r["Type"] == "Custom::AWS"]
    delete = json.loads(str(render.fill(finalizer["Properties"]["Delete"])))
    assert delete["action"] == "deleteEndpoint"
    assert delete["parameters"] == {"EndpointName": "Digits-Prod"}


def test_grants_on_the_pipelines_endpoint_and_for_fit(code_dir: Any) -> None:
    stack = cdk.Stack(cdk.App(), "Grants")
    pipeline = _named_pipeline(stack, code_dir)
    client = iam.Role(stack, "Client", assumed_by=iam.AccountRootPrincipal())
    assert isinstance(pipeline.grant_invoke(client), iam.Grant)
    ci = iam.Role(stack, "Ci", assumed_by=iam.AccountRootPrincipal())
    assert isinstance(pipeline.grant_wait(ci), iam.Grant)
    template = cdk.assertions.Template.from_stack(stack).to_json()

    def statements(role: str) -> list[dict[str, Any]]:
        return [
            st
            for r in template["Resources"].values()
            if r["Type"] == "AWS::IAM::Policy"
            and any(role in str(x) for x in r["Properties"].get("Roles", []))
            for st in r["Properties"]["PolicyDocument"]["Statement"]
        ]

    ci_actions = {a for st in statements("Ci") for a in _actions(st)}
    # client.fit(wait=True): start, describe, read the history for the job name, read logs
    assert {
        "states:StartExecution",
        "states:DescribeExecution",
        "states:GetExecutionHistory",
        "logs:FilterLogEvents",
    } <= ci_actions
    assert all(st["Resource"] != "*" for st in statements("Ci"))
    invoke = json.dumps(statements("Client"))
    assert ":endpoint/digits-prod" in invoke  # SageMaker ARNs are lower case
    assert "Digits-Prod" not in invoke
    assert pipeline.metric_invocations().dimensions == {
        "EndpointName": "Digits-Prod",
        "VariantName": "AllTraffic",
    }


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
