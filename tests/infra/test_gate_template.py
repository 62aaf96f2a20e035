"""What ``quality_gate=`` and ``approval=`` add to the template (their behaviour:
test_sfn_gate.py): states, grants, cdk-nag, and the SNS request against botocore's model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import botocore.session
import pytest
from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_stepfunctions as sfn
from botocore.validate import ParamValidator

from chainer_sagemaker_cdk import (
    Approval,
    ChainerEstimator,
    ChainerModel,
    ChainerValidationError,
    MetricThreshold,
    ModelData,
    QualityGate,
    RuntimeImage,
    SourceCode,
    TrainingPipeline,
)
from chainer_sagemaker_cdk.guardrails import DeploymentGuardrails
from chainer_sagemaker_cdk.registry import ModelRegistry

from . import iam_check
from .conftest import nag_app
from .render import state_machine_definition
from .test_cdk_botocore import _validate

PACKAGE = "arn:aws:sagemaker:us-east-1:123456789012:model-package/digits-models/1"
METRICS = {"validation:accuracy": r"accuracy=(\S+)", "validation:loss": r"loss=(\S+)"}
GATE = QualityGate(
    thresholds=[
        MetricThreshold("validation:accuracy", ">=", 0.9),
        MetricThreshold("validation:loss", "<", 0.5),
    ]
)


def _estimator(stack: cdk.Stack, code_dir: Path, **props: Any) -> ChainerEstimator:
    return ChainerEstimator(
        stack,
        "Estimator",
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
        base_job_name="digits",
        **props,
    )


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory, code_dir: Path) -> cdk.cx_api.CloudAssembly:
    """Gate and approval on an encrypted topic, synthesized with the three cdk-nag packs (the
    artifacts bucket is imported: its findings are app.py's, checked by test_cdk_compliance)."""
    app = nag_app(tmp_path_factory.mktemp("gated-out"))
    stack = cdk.Stack(app, "Gated")
    key = kms.Key(stack, "TopicKey", enable_key_rotation=True)
    topic = sns.Topic(stack, "Approvals", master_key=key, enforce_ssl=True)
    artifacts = s3.Bucket.from_bucket_name(stack, "Artifacts", "digits-artifacts")
    TrainingPipeline(
        stack,
        "Pipeline",
        estimator=_estimator(stack, code_dir, metric_definitions=METRICS, output_bucket=artifacts),
        quality_gate=QualityGate(GATE.thresholds, compare_with_serving=True),
        approval=Approval(topic=topic, timeout=Duration.hours(8)),
        registry=ModelRegistry(group_name="digits-models", description="Digits classifiers"),
        guardrails=DeploymentGuardrails(
            traffic="LINEAR",
            step_percent=25,
            wait_interval=Duration.minutes(10),
            termination_wait=Duration.minutes(2),
            maximum_execution_timeout=Duration.hours(2),
            alarms=[
                cloudwatch.Alarm.from_alarm_arn(
                    stack,
                    "Mine",
                    "arn:aws:cloudwatch:us-east-1:123456789012:alarm:digits-accuracy-drop",
                )
            ],
            max_model_latency=Duration.millis(250),
        ),
    )
    # A user's own stack serving a registered version.
    mine = cdk.Stack(app, "Mine")
    ChainerModel(
        mine,
        "Registered",
        model_data=ModelData.from_model_package(PACKAGE),
        code=SourceCode.from_directory(code_dir, "train.py"),
        image=RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/c:1"),
    )
    return app.synth()


@pytest.fixture(scope="module")
def template(gated: cdk.cx_api.CloudAssembly) -> dict[str, Any]:
    return gated.get_stack_by_name("Gated").template  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def mine(gated: cdk.cx_api.CloudAssembly) -> dict[str, Any]:
    return gated.get_stack_by_name("Mine").template  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def states(template: dict[str, Any]) -> dict[str, Any]:
    return state_machine_definition(template)["States"]  # type: ignore[no-any-return]


def test_cdk_nag_finds_nothing(gated: cdk.cx_api.CloudAssembly) -> None:
    report = json.loads((Path(gated.directory) / "validation-report.json").read_text())
    for plugin in report["pluginReports"]:
        assert plugin["violations"] == [], plugin["pluginName"]


def test_without_gate_or_approval_nothing_is_added(example_definition: dict[str, Any]) -> None:
    states = example_definition["States"]
    assert "Metrics.$" not in states["Train"]["ResultSelector"]
    assert not {"ReadMetrics", "ModelRejected", "RequestApproval"} & set(states)


def test_gate_reads_the_final_metrics_and_checks_each_threshold(states: dict[str, Any]) -> None:
    assert states["Train"]["ResultSelector"]["Metrics.$"] == "$.FinalMetricDataList[*]"
    assert states["Train"]["Next"] == "ReadMetrics"
    assert states["ReadMetrics"]["ItemsPath"] == "$.training.Metrics"
    first, second = states["CheckThreshold0"], states["CheckThreshold1"]
    assert first["Choices"][1] == {
        "Variable": "$.gate.m0[0]",
        "NumericLessThan": 0.9,
        "Next": "ThresholdMissed0",
    }
    assert second["Choices"][1] == {
        "Variable": "$.gate.m1[0]",
        "NumericGreaterThanEquals": 0.5,
        "Next": "ThresholdMissed1",
    }
    assert first["Default"] == "CheckThreshold1"
    assert second["Default"] == "FindServingModel"  # compare_with_serving, then passed
    assert states["CompareWithServing1"]["Default"] == "QualityGatePassed"
    assert states["ModelRejected"] == {
        "Type": "Fail",
        "Error": "ModelRejected",
        "CausePath": "$.gateError.Cause",
    }
    # Passed: the approval, then the registry and the deployment.
    assert states["QualityGatePassed"]["Next"] == "RequestApproval"


@pytest.mark.parametrize(
    ("operator", "missed"),
    [
        (">=", "NumericLessThan"),
        (">", "NumericLessThanEquals"),
        ("<=", "NumericGreaterThan"),
        ("<", "NumericGreaterThanEquals"),
    ],
)
def test_each_operator_rejects_its_complement(operator: str, missed: str) -> None:
    from chainer_sagemaker_cdk.quality_gate import gate_states

    stack = cdk.Stack(cdk.App(), "Op")
    gate = QualityGate([MetricThreshold("m", operator, 1.5)])
    chain = gate_states(stack, gate, "$.training.Metrics")
    graph = sfn.StateGraph(chain.start_state, "gate").to_graph_json()
    assert graph["States"]["CheckThreshold0"]["Choices"][1][missed] == 1.5


def test_approval_publishes_and_waits_with_a_timeout(states: dict[str, Any]) -> None:
    task = states["RequestApproval"]
    assert task["Resource"] == "arn:aws:states:::sns:publish.waitForTaskToken"
    assert task["TimeoutSeconds"] == 8 * 3600
    assert task["Parameters"]["Message"]["TaskToken.$"] == "$$.Task.Token"
    assert task["Parameters"]["Message"]["Metrics.$"] == "$.training.Metrics"
    assert {c["Next"]: c["ErrorEquals"] for c in task["Catch"]} == {
        "ApprovalTimedOut": ["States.Timeout"],
        "ApprovalRejected": ["ModelRejected"],
    }


def test_sns_request_fits_botocore_model(states: dict[str, Any]) -> None:
    """Step Functions sends the Message object as its JSON text (optimized SNS integration)."""
    params = dict(states["RequestApproval"]["Parameters"])
    message = {k.removesuffix(".$"): "sample" for k in params.pop("Message")}
    params = {**params, "TopicArn": "arn:aws:sns:us-east-1:123456789012:approvals"}
    params["Message"] = json.dumps(message)
    model = botocore.session.get_session().get_service_model("sns")
    report = ParamValidator().validate(params, model.operation_model("Publish").input_shape)
    assert not report.has_errors(), report.generate_report()
    assert len(params["Subject"]) <= 100  # SNS's Subject limit (Publish API reference)


def test_grants_publish_on_the_topic_and_its_key_only(template: dict[str, Any]) -> None:
    """sns:Publish on the topic (https://docs.aws.amazon.com/step-functions/latest/dg/sns-iam.html),
    GenerateDataKey/Decrypt on its key (SNS developer guide, SSE)."""
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("PipelineRole")
    )
    documents = iam_check.role_policies(template, role)
    topic = iam_check.concrete(template, {"Ref": _logical_id(template, "AWS::SNS::Topic")})
    key = iam_check.concrete(
        template, {"Fn::GetAtt": [_logical_id(template, "AWS::KMS::Key", "TopicKey"), "Arn"]}
    )
    assert iam_check.allows(documents, "sns:Publish", topic)
    assert not iam_check.allows(documents, "sns:Publish", topic + "-other")
    assert not iam_check.allows(documents, "sns:Subscribe", topic)
    for action in ("kms:GenerateDataKey", "kms:Decrypt"):
        assert iam_check.allows(documents, action, key), action
    for document in documents:
        assert iam_check.findings(document) == []


def _logical_id(template: dict[str, Any], kind: str, prefix: str = "") -> str:
    (found,) = [
        k for k, r in template["Resources"].items() if r["Type"] == kind and k.startswith(prefix)
    ]
    return found


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (QualityGate([MetricThreshold("test:f1", ">=", 0.5)]), "declare it in the estimator"),
        (QualityGate([MetricThreshold("validation:loss", "=<", 0.5)]), "use one of >=, >, <=, <"),
        (QualityGate([]), "at least one MetricThreshold"),
        (QualityGate([MetricThreshold("it's", ">", 0)]), "without quotes"),
    ],
    ids=["undeclared", "operator", "empty", "quote"],
)
def test_bad_gates_fail_at_synth_naming_the_fix(
    stack: cdk.Stack, code_dir: Path, gate: QualityGate, message: str
) -> None:
    estimator = _estimator(stack, code_dir, metric_definitions={**METRICS, "it's": "x=(.*)"})
    with pytest.raises(ChainerValidationError, match=message):
        TrainingPipeline(stack, "P", estimator=estimator, quality_gate=gate)


def test_approval_timeout_is_bounded(stack: cdk.Stack, code_dir: Path) -> None:
    topic = sns.Topic(stack, "T")
    with pytest.raises(ChainerValidationError, match="between 1 second and 365 days"):
        TrainingPipeline(
            stack,
            "P",
            estimator=_estimator(stack, code_dir),
            approval=Approval(topic=topic, timeout=Duration.days(400)),
        )


SAGEMAKER = botocore.session.get_session().get_service_model("sagemaker")
JOB = "digits--0f8fad5b-d9cb-469f-a165-70867728950e"


def _sample(value: Any) -> Any:
    """Execution-time fields filled with samples (names by field, values by field name)."""
    samples = {
        "ModelPackageDescription": f"Trained by {JOB}",
        "ModelDataUrl": f"s3://digits-artifacts/models/{JOB}/output/model.tar.gz",
        "ModelPackageName": PACKAGE,
        "TrainingJobName": JOB,
        "ModelName": JOB,
    }
    if isinstance(value, list):
        return [_sample(v) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = key.removesuffix(".$")
        out[name] = samples.get(name, "0.93") if key.endswith(".$") else _sample(item)
    return out


def test_registry_is_a_stack_resource_retained(template: dict[str, Any]) -> None:
    groups = [r for r in template["Resources"].values() if r["Type"].endswith("ModelPackageGroup")]
    assert groups == [
        {
            "Type": "AWS::SageMaker::ModelPackageGroup",
            "Properties": {
                "ModelPackageGroupName": "digits-models",
                "ModelPackageGroupDescription": "Digits classifiers",
            },
            "UpdateReplacePolicy": "Retain",
            "DeletionPolicy": "Retain",
        }
    ]
    machine = next(
        r for r in template["Resources"].values() if r["Type"] == "AWS::StepFunctions::StateMachine"
    )
    assert any("ModelPackageGroup" in d for d in machine["DependsOn"])


def test_registers_after_approval_and_deploys_the_version(states: dict[str, Any]) -> None:
    assert states["Approved"]["Next"] == "RegisterModel"
    register = states["RegisterModel"]
    assert register["Resource"] == "arn:aws:states:::aws-sdk:sagemaker:createModelPackage"
    assert register["Next"] == "CreateModel"
    params = register["Parameters"]
    assert params["ModelPackageGroupName"] == "digits-models"
    assert params["ModelApprovalStatus"] == "Approved"
    assert "Tags" not in params  # refused with ModelPackageGroupName: the group's tags apply
    assert params["CustomerMetadataProperties"] == {
        "TrainingJobName.$": "$.training.TrainingJobName",
        "validation:accuracy.$": "States.Format('{}', $.gate.m0[0])",
        "validation:loss.$": "States.Format('{}', $.gate.m1[0])",
    }
    (container,) = params["InferenceSpecification"]["Containers"]
    assert container["ModelDataUrl.$"] == "$.training.ModelArtifacts"
    assert "SAGEMAKER_PROGRAM" in container["Environment"]
    assert states["CreateModel"]["Parameters"]["PrimaryContainer"] == {
        "ModelPackageName.$": "$.registered.ModelPackageArn"
    }


@pytest.mark.parametrize(
    ("state", "operation"),
    [("RegisterModel", "CreateModelPackage"), ("CreateModel", "CreateModel")],
)
def test_registry_requests_fit_botocore_model(
    states: dict[str, Any], state: str, operation: str
) -> None:
    params = _sample(states[state]["Parameters"])
    params.pop("Tags", None)  # a token in this template (no tags): absent in the request
    assert _validate(SAGEMAKER.operation_model(operation), params) == []


def test_registry_grants_only_its_group(template: dict[str, Any]) -> None:
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("PipelineRole")
    )
    documents = iam_check.role_policies(template, role)
    group = "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/digits-models"
    for action, resource in (
        ("sagemaker:CreateModelPackage", group),
        ("sagemaker:CreateModelPackage", PACKAGE),
        ("sagemaker:DescribeModelPackage", PACKAGE),
    ):
        assert iam_check.allows(documents, action, resource), (action, resource)
    other = PACKAGE.replace("digits-models", "other-models")
    assert not iam_check.allows(documents, "sagemaker:CreateModelPackage", other)
    assert not iam_check.allows(documents, "sagemaker:UpdateModelPackage", PACKAGE)


def test_registry_needs_deploy(stack: cdk.Stack, code_dir: Path) -> None:
    with pytest.raises(ChainerValidationError, match="needs deploy=True"):
        TrainingPipeline(
            stack,
            "P",
            estimator=_estimator(stack, code_dir),
            deploy=False,
            registry=ModelRegistry(),
        )


def test_model_from_a_registered_version(mine: dict[str, Any]) -> None:
    """DescribeModelPackage at deploy time (a custom resource under its own role, allowed on
    that version only); the model reads the version's ModelDataUrl."""
    template = mine
    (lookup,) = [
        r
        for r in template["Resources"].values()
        if r["Type"] == "Custom::AWS" and "describeModelPackage" in json.dumps(r)
    ]
    create = json.loads(iam_check.concrete(template, lookup["Properties"]["Create"]))
    assert create["action"] == "describeModelPackage"
    assert _validate(SAGEMAKER.operation_model("DescribeModelPackage"), create["parameters"]) == []
    model = next(
        r
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::SageMaker::Model" and k.startswith("Registered")
    )
    url = model["Properties"]["PrimaryContainer"]["ModelDataUrl"]
    assert "InferenceSpecification.Containers.0.ModelDataUrl" in json.dumps(url)
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("RegisteredDescribeModelPackageRole")
    )
    documents = [
        iam_check.concrete(template, r["Properties"]["PolicyDocument"])
        for r in template["Resources"].values()
        if r["Type"] == "AWS::IAM::ManagedPolicy" and {"Ref": role} in r["Properties"]["Roles"]
    ]
    assert iam_check.allows(documents, "sagemaker:DescribeModelPackage", PACKAGE)
    assert not iam_check.allows(
        documents, "sagemaker:DescribeModelPackage", PACKAGE.removesuffix("1") + "2"
    )


@pytest.mark.parametrize(
    "arn",
    ["digits-models/1", "arn:aws:sagemaker:us-east-1:123456789012:model-package/digits-models"],
)
def test_from_model_package_needs_a_version_arn(arn: str) -> None:
    with pytest.raises(ChainerValidationError, match="model package version's ARN"):
        ModelData.from_model_package(arn)


def test_guardrails_update_blue_green_with_rollback_alarms(
    template: dict[str, Any], states: dict[str, Any]
) -> None:
    config = states["UpdateEndpoint"]["Parameters"]["DeploymentConfig"]
    assert config["BlueGreenUpdatePolicy"] == {
        "TrafficRoutingConfiguration": {
            "Type": "LINEAR",
            "WaitIntervalInSeconds": 600,
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        },
        "TerminationWaitInSeconds": 120,
        "MaximumExecutionTimeoutInSeconds": 7200,
    }
    names = [a["AlarmName"] for a in config["AutoRollbackConfiguration"]["Alarms"]]
    assert names[2] == "digits-accuracy-drop"
    alarms = {
        k: r["Properties"]
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    }
    errors = next(p for k, p in alarms.items() if "5xx" in k)
    latency = next(p for k, p in alarms.items() if "Latency" in k)
    assert (errors["MetricName"], errors["Statistic"], errors["Threshold"]) == (
        "Invocation5XXErrors",
        "Sum",
        1,
    )
    assert (latency["MetricName"], latency["Threshold"]) == ("ModelLatency", 250000)
    for alarm in (errors, latency):
        assert alarm["Period"] == 60
        assert alarm["TreatMissingData"] == "notBreaching"
        assert {d["Name"] for d in alarm["Dimensions"]} == {"EndpointName", "VariantName"}
    assert "DeploymentConfig" not in states["CreateEndpoint"]["Parameters"]


def test_guardrails_request_fits_botocore_model(
    template: dict[str, Any], states: dict[str, Any]
) -> None:
    params = {
        "EndpointName": "digits",
        "EndpointConfigName": JOB,
        "DeploymentConfig": iam_check.concrete(
            template, states["UpdateEndpoint"]["Parameters"]["DeploymentConfig"]
        ),
    }
    assert _validate(SAGEMAKER.operation_model("UpdateEndpoint"), params) == []


def test_guardrails_may_describe_only_their_alarms(template: dict[str, Any]) -> None:
    """https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html"""
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("PipelineRole")
    )
    documents = iam_check.role_policies(template, role)
    mine = "arn:aws:cloudwatch:us-east-1:123456789012:alarm:digits-accuracy-drop"
    assert iam_check.allows(documents, "cloudwatch:DescribeAlarms", mine)
    assert not iam_check.allows(documents, "cloudwatch:DescribeAlarms", mine + "-other")


def test_default_update_has_no_deployment_config(example_definition: dict[str, Any]) -> None:
    assert "DeploymentConfig" not in example_definition["States"]["UpdateEndpoint"]["Parameters"]


@pytest.mark.parametrize(
    ("props", "routing"),
    [
        ({"traffic": "ALL_AT_ONCE"}, {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300}),
        (
            {},
            {
                "Type": "CANARY",
                "WaitIntervalInSeconds": 300,
                "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
            },
        ),
    ],
)
def test_traffic_modes(props: dict[str, Any], routing: dict[str, Any]) -> None:
    config = DeploymentGuardrails(**props).deployment_config(["a"])
    assert config["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == routing


@pytest.mark.parametrize(
    ("props", "message"),
    [
        ({"traffic": "BLUE_GREEN"}, "use one of"),
        ({"step_percent": 0}, "1 to 100 percent"),
        ({"wait_interval": Duration.hours(2)}, "0 to 3600 seconds"),
        ({"maximum_execution_timeout": Duration.minutes(5)}, "600 to 28800"),
        ({"default_alarms": False}, "nothing rolls back"),
    ],
)
def test_bad_guardrails_fail_naming_the_fix(props: dict[str, Any], message: str) -> None:
    with pytest.raises(ChainerValidationError, match=message):
        DeploymentGuardrails(**props).validate()


def test_compare_with_serving_reads_the_serving_version(
    template: dict[str, Any], states: dict[str, Any]
) -> None:
    assert states["CheckThreshold1"]["Default"] == "FindServingModel"
    assert states["DescribeServingModel"]["Parameters"] == {
        "ModelName.$": "$.servingEndpoint.EndpointConfigName"
    }
    compare = states["CompareWithServing0"]["Choices"][0]
    assert compare == {
        "Variable": "$.gate.m0[0]",
        "NumericLessThanPath": "$.gateServing0.v",
        "Next": "WorseThanServing0",
    }
    assert states["CompareWithServing1"]["Choices"][0]["NumericGreaterThanPath"] == (
        "$.gateServing1.v"
    )
    for name, operation in (
        ("FindServingModel", "DescribeEndpoint"),
        ("DescribeServingModel", "DescribeModel"),
        ("DescribeServingVersion", "DescribeModelPackage"),
    ):
        params = _sample(states[name]["Parameters"])
        assert _validate(SAGEMAKER.operation_model(operation), params) == [], name
    role = next(
        k
        for k, r in template["Resources"].items()
        if r["Type"] == "AWS::IAM::Role" and k.startswith("PipelineRole")
    )
    documents = iam_check.role_policies(template, role)
    model = f"arn:aws:sagemaker:us-east-1:123456789012:model/{JOB}"
    assert iam_check.allows(documents, "sagemaker:DescribeModel", model)
    assert not iam_check.allows(
        documents, "sagemaker:DescribeModel", model.replace("model/digits", "model/other")
    )


def test_compare_with_serving_needs_the_registry(stack: cdk.Stack, code_dir: Path) -> None:
    with pytest.raises(ChainerValidationError, match="registry=ModelRegistry"):
        TrainingPipeline(
            stack,
            "P",
            estimator=_estimator(stack, code_dir, metric_definitions=METRICS),
            quality_gate=QualityGate(GATE.thresholds, compare_with_serving=True),
        )


def test_gate_and_approval_without_deploy_end_the_machine(stack: cdk.Stack, code_dir: Path) -> None:
    """deploy=False: train, gate, approve, end (a model to take elsewhere)."""
    pipeline = TrainingPipeline(
        stack,
        "P",
        estimator=_estimator(stack, code_dir, metric_definitions=METRICS),
        deploy=False,
        quality_gate=GATE,
        approval=Approval(topic=sns.Topic(stack, "T")),
    )
    assert pipeline.fragment.end_states[0].id == "Approved"  # type: ignore[attr-defined]
    template = cdk.assertions.Template.from_stack(stack).to_json()
    graph = state_machine_definition(template)["States"]
    assert graph["Approved"].get("End") is True
    assert graph["RequestApproval"]["TimeoutSeconds"] == 86400  # the default: one day
    assert "CreateModel" not in graph
