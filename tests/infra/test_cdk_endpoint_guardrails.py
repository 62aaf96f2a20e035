"""Deployment guardrails and shadow variants on ChainerEndpoint (issue 14, items 1 and 2).

The README's code blocks for both are executed here, in one nag-checked app (synth fails on
any cdk-nag finding); the refused combinations use cheap fresh stacks.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_s3 as s3

from chainer_sagemaker_cdk import (
    AsyncInference,
    ChainerEndpoint,
    ChainerModel,
    ChainerValidationError,
    DeploymentGuardrails,
    EndpointVariant,
    ModelData,
    RuntimeImage,
    ServerlessConfig,
    SourceCode,
)

from .conftest import nag_app
from .render import fill, resources_of_type
from .test_cdk_botocore import MODEL, _validate

REPO = Path(__file__).resolve().parents[2]
IMAGE = RuntimeImage.from_registry("123456789012.dkr.ecr.us-east-1.amazonaws.com/chainer:1")


def readme_block(heading: str, index: int = 0) -> str:
    """The ``index``-th Python block of the README section under ``heading``."""
    text = (REPO / "README.md").read_text()
    start = text.index(f"\n{heading}\n")
    end = text.find("\n### ", start + 1)
    section = text[start : end if end > 0 else len(text)]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    return textwrap.dedent(blocks[index])


def _model(stack: cdk.Stack, code: SourceCode, id: str, **props: Any) -> ChainerModel:
    bucket = s3.Bucket.from_bucket_name(stack, f"{id}Bucket", "model-bucket")
    props.setdefault("image", IMAGE)
    data = ModelData.from_bucket(bucket, f"{id}/model.tar.gz")
    return ChainerModel(stack, id, model_data=data, code=code, **props)


def _run_readme(heading: str, index: int, names: dict[str, Any]) -> dict[str, Any]:
    # The README's own text, from this repository: what a user copies must run.
    exec(compile(readme_block(heading, index), f"README {heading}", "exec"), names)  # noqa: S102
    return names


@pytest.fixture(scope="module")
def app_objects(tmp_path_factory: pytest.TempPathFactory, code: SourceCode) -> dict[str, Any]:
    app = nag_app(tmp_path_factory.mktemp("endpoint-guardrails"))
    stack = cdk.Stack(app, "EndpointGuardrails", env=cdk.Environment(account="123456789012"))
    accuracy_alarm = cloudwatch.Alarm.from_alarm_arn(
        stack,
        "Accuracy",
        "arn:aws:cloudwatch:us-east-1:123456789012:alarm:digits-accuracy-low",
    )
    names: dict[str, Any] = {
        "self": stack,
        "model": _model(stack, code, "Model", instance_type="ml.c5.large"),
        "accuracy_alarm": accuracy_alarm,
        "current_model": _model(stack, code, "Current", instance_type="ml.c5.large"),
        "candidate_model": _model(stack, code, "Candidate", instance_type="ml.c5.large"),
    }
    _run_readme("### Guardrails on `ChainerEndpoint`", 0, names)
    _run_readme("### Shadow variants", 0, names)
    assembly = app.synth()
    names["template"] = assembly.get_stack_by_name("EndpointGuardrails").template
    return names


@pytest.fixture(scope="module")
def template(app_objects: dict[str, Any]) -> dict[str, Any]:
    return app_objects["template"]  # type: ignore[no-any-return]


def _resource(template: dict[str, Any], kind: str, prefix: str) -> dict[str, Any]:
    (resource,) = [
        r["Properties"]
        for k, r in resources_of_type(template, kind).items()
        if k.startswith(prefix)
    ]
    return resource


# -- guardrails ------------------------------------------------------------------------------
def test_guardrails_become_the_endpoints_deployment_config(template: dict[str, Any]) -> None:
    endpoint = _resource(template, "AWS::SageMaker::Endpoint", "Guarded")
    config = endpoint["DeploymentConfig"]
    alarm_ids = sorted(
        k for k in resources_of_type(template, "AWS::CloudWatch::Alarm") if k.startswith("Guarded")
    )
    assert len(alarm_ids) == 2
    assert config["BlueGreenUpdatePolicy"] == {
        "TrafficRoutingConfiguration": {
            "Type": "LINEAR",
            "WaitIntervalInSeconds": 600,
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
        },
        "TerminationWaitInSeconds": 0,
    }
    alarms = config["AutoRollbackConfiguration"]["Alarms"]
    refs = sorted(a["AlarmName"]["Ref"] for a in alarms if isinstance(a["AlarmName"], dict))
    assert refs == alarm_ids
    assert {"AlarmName": "digits-accuracy-low"} in alarms
    assert len(alarms) == 3
    # autoscaling: a stack update keeps the instance count autoscaling chose
    assert endpoint["RetainAllVariantProperties"] is True


def test_default_alarms_watch_the_endpoints_first_variant(
    app_objects: dict[str, Any], template: dict[str, Any]
) -> None:
    alarms = [
        a["Properties"]
        for k, a in resources_of_type(template, "AWS::CloudWatch::Alarm").items()
        if k.startswith("Guarded")
    ]
    by_metric = {a["MetricName"]: a for a in alarms}
    assert set(by_metric) == {"Invocation5XXErrors", "ModelLatency"}
    # A name from the construct path: the alarms exist before the endpoint that names them
    # (CloudFormation's generated name would make a cycle).
    name = _resource(template, "AWS::SageMaker::Endpoint", "Guarded")["EndpointName"]
    assert re.fullmatch(r"EndpointGuardrails-Guarded-[0-9A-F]{8}", name)
    for alarm in alarms:
        dims = {d["Name"]: d["Value"] for d in alarm["Dimensions"]}
        assert dims == {"EndpointName": name, "VariantName": "AllTraffic"}
        assert alarm["TreatMissingData"] == "notBreaching"
        assert alarm["Period"] == 60
    assert by_metric["ModelLatency"]["Threshold"] == 1_000_000  # 1 s in microseconds
    guarded = app_objects["guarded"]
    assert len(guarded.rollback_alarms) == 3


@pytest.mark.parametrize("operation", ["CreateEndpoint", "UpdateEndpoint"])
def test_guarded_endpoint_validates_against_botocore(
    template: dict[str, Any], operation: str
) -> None:
    params = fill(_resource(template, "AWS::SageMaker::Endpoint", "Guarded"))
    params["EndpointConfigName"] = "config"
    params["EndpointName"] = "guarded"
    retain = params.pop("RetainAllVariantProperties")
    if operation == "UpdateEndpoint":
        params["RetainAllVariantProperties"] = retain
    assert "DeploymentConfig" in params
    assert _validate(MODEL.operation_model(operation), params) == []


def test_an_endpoint_without_guardrails_has_no_deployment_config(template: dict[str, Any]) -> None:
    endpoint = _resource(template, "AWS::SageMaker::Endpoint", "Shadowed")
    assert "DeploymentConfig" not in endpoint
    assert "RetainAllVariantProperties" not in endpoint


def test_rolling_update_on_instances(code: SourceCode) -> None:
    stack = cdk.Stack(cdk.App(), "Rolling")
    ChainerEndpoint(
        stack,
        "E",
        model=_model(stack, code, "M"),
        initial_instance_count=4,
        guardrails=DeploymentGuardrails(traffic="ROLLING", batch_size=25),
    )
    template = cdk.assertions.Template.from_stack(stack).to_json()
    params = fill(_resource(template, "AWS::SageMaker::Endpoint", "E"))
    policy = params["DeploymentConfig"]["RollingUpdatePolicy"]
    assert policy["MaximumBatchSize"] == {"Type": "CAPACITY_PERCENT", "Value": 25}
    assert "BlueGreenUpdatePolicy" not in params["DeploymentConfig"]
    assert len(params["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]) == 2
    params["EndpointConfigName"] = "config"
    assert _validate(MODEL.operation_model("UpdateEndpoint"), params) == []


def test_a_given_name_is_kept_with_guardrails(code: SourceCode) -> None:
    stack = cdk.Stack(cdk.App(), "Named")
    ChainerEndpoint(
        stack,
        "E",
        model=_model(stack, code, "M"),
        endpoint_name="digits",
        guardrails=DeploymentGuardrails(traffic="CANARY"),
    )
    template = cdk.assertions.Template.from_stack(stack).to_json()
    assert _resource(template, "AWS::SageMaker::Endpoint", "E")["EndpointName"] == "digits"
    for alarm in resources_of_type(template, "AWS::CloudWatch::Alarm").values():
        dims = {d["Name"]: d["Value"] for d in alarm["Properties"]["Dimensions"]}
        assert dims["EndpointName"] == "digits"


# -- shadow variants -------------------------------------------------------------------------
def test_shadow_variant_in_the_endpoint_config(template: dict[str, Any]) -> None:
    config = _resource(template, "AWS::SageMaker::EndpointConfig", "Shadowed")
    models = resources_of_type(template, "AWS::SageMaker::Model")
    current = next(k for k in models if k.startswith("Current"))
    candidate = next(k for k in models if k.startswith("Candidate"))
    assert config["ProductionVariants"] == [
        {
            "VariantName": "AllTraffic",
            "ModelName": {"Fn::GetAtt": [current, "ModelName"]},
            "InstanceType": "ml.c5.large",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 1,
        }
    ]
    assert config["ShadowProductionVariants"] == [
        {
            "VariantName": "Shadow",
            "ModelName": {"Fn::GetAtt": [candidate, "ModelName"]},
            "InstanceType": "ml.c5.large",
            "InitialInstanceCount": 1,
            "InitialVariantWeight": 0.5,
        }
    ]
    params = fill(config)
    params["EndpointConfigName"] = "config"
    assert _validate(MODEL.operation_model("CreateEndpointConfig"), params) == []


def test_metrics_per_variant(app_objects: dict[str, Any]) -> None:
    stack = app_objects["self"]
    shadow = stack.resolve(app_objects["shadow_latency"].dimensions)
    production = stack.resolve(app_objects["production_latency"].dimensions)
    assert shadow["VariantName"] == "Shadow"
    assert production["VariantName"] == "AllTraffic"
    assert shadow["EndpointName"] == production["EndpointName"]
    errors = app_objects["shadow_errors"]
    assert (errors.metric_name, errors.statistic) == ("Invocation5XXErrors", "Sum")


def test_promotion_keeps_the_endpoint_and_serves_the_candidate(code: SourceCode) -> None:
    """The README's promotion: the same construct ID, the candidate as the one variant."""
    stack = cdk.Stack(cdk.App(), "Promoted")
    names: dict[str, Any] = {
        "self": stack,
        "ChainerEndpoint": ChainerEndpoint,  # imported by the section's first block
        "current_model": _model(stack, code, "Current", instance_type="ml.c5.large"),
        "candidate_model": _model(stack, code, "Candidate", instance_type="ml.c5.large"),
    }
    before = cdk.Stack(cdk.App(), "Shadowing")
    _run_readme(
        "### Shadow variants",
        0,
        {
            "self": before,
            "current_model": _model(before, code, "Current", instance_type="ml.c5.large"),
            "candidate_model": _model(before, code, "Candidate", instance_type="ml.c5.large"),
        },
    )
    _run_readme("### Shadow variants", 1, names)
    promoted = cdk.assertions.Template.from_stack(stack).to_json()
    shadowing = cdk.assertions.Template.from_stack(before).to_json()
    endpoints = resources_of_type(promoted, "AWS::SageMaker::Endpoint")
    assert set(endpoints) == set(resources_of_type(shadowing, "AWS::SageMaker::Endpoint"))
    config = _resource(promoted, "AWS::SageMaker::EndpointConfig", "Shadowed")
    assert "ShadowProductionVariants" not in config
    (variant,) = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"  # the name guarded updates need kept
    candidate = next(
        k for k in resources_of_type(promoted, "AWS::SageMaker::Model") if k.startswith("Candidate")
    )
    assert variant["ModelName"] == {"Fn::GetAtt": [candidate, "ModelName"]}


def test_snapshot_and_cfn_lint(template: dict[str, Any]) -> None:
    from .test_cdk_compliance import _lint
    from .test_cdk_snapshots import _check

    _check("EndpointGuardrails", template)
    findings = [
        f"{m.rule.id} {m.message} ({'/'.join(map(str, m.path))})"
        for m in _lint(template)
        if m.rule.id.startswith(("E", "W"))
    ]
    assert findings == []


# -- refused combinations --------------------------------------------------------------------
def _refused(code: SourceCode, case: str) -> dict[str, Any]:
    stack = cdk.Stack(cdk.App(), "Refused")
    a = _model(stack, code, "A")
    b = _model(stack, code, "B")
    io = AsyncInference(bucket=s3.Bucket.from_bucket_name(stack, "Io", "io-bucket"))
    cases: dict[str, dict[str, Any]] = {
        "two-shadows": {
            "model": a,
            "shadow_variants": [
                EndpointVariant(model=b),
                EndpointVariant(model=b, variant_name="Shadow2"),
            ],
        },
        "shadow-and-two-variants": {
            "variants": [EndpointVariant(model=a), EndpointVariant(model=a, variant_name="B")],
            "shadow_variants": [EndpointVariant(model=b)],
        },
        "shadow-serverless": {
            "model": a,
            "shadow_variants": [EndpointVariant(model=b, serverless=ServerlessConfig())],
        },
        "shadow-of-serverless": {
            "model": a,
            "serverless": ServerlessConfig(),
            "shadow_variants": [EndpointVariant(model=b)],
        },
        "shadow-async": {
            "model": a,
            "async_inference": io,
            "shadow_variants": [EndpointVariant(model=b)],
        },
        "shadow-name": {
            "model": a,
            "shadow_variants": [EndpointVariant(model=b, variant_name="AllTraffic")],
        },
        "shadow-weight": {
            "model": a,
            "shadow_variants": [EndpointVariant(model=b, initial_weight=0)],
        },
        "guardrails-invalid": {
            "model": a,
            "guardrails": DeploymentGuardrails(traffic="SOMETIMES"),
        },
        "guardrails-no-alarm": {
            "model": a,
            "guardrails": DeploymentGuardrails(default_alarms=False),
        },
        "rolling-serverless": {
            "model": a,
            "serverless": ServerlessConfig(),
            "guardrails": DeploymentGuardrails(traffic="ROLLING"),
        },
        "rolling-one-instance": {
            "model": a,
            "guardrails": DeploymentGuardrails(traffic="ROLLING"),
        },
        "rolling-two-variants": {
            "variants": [
                EndpointVariant(model=a, initial_instance_count=4),
                EndpointVariant(model=b, variant_name="B", initial_instance_count=4),
            ],
            "guardrails": DeploymentGuardrails(traffic="ROLLING"),
        },
        "guardrails-inf1": {
            "model": a,
            "instance_type": "ml.inf1.xlarge",
            "guardrails": DeploymentGuardrails(),
        },
    }
    return {"stack": stack, **cases[case]}


REFUSED = [
    ("two-shadows", "shadow_variants"),
    ("shadow-and-two-variants", "variants"),
    ("shadow-serverless", "serverless"),
    ("shadow-of-serverless", "serverless"),
    ("shadow-async", "async_inference"),
    ("shadow-name", "variants"),
    ("shadow-weight", "shadow_variants.initial_weight"),
    ("guardrails-invalid", "traffic"),
    ("guardrails-no-alarm", "alarms"),
    ("guardrails-inf1", "guardrails"),
    ("rolling-serverless", "guardrails.traffic"),
    ("rolling-one-instance", "guardrails.traffic"),
    ("rolling-two-variants", "guardrails.traffic"),
]


@pytest.mark.parametrize(("case", "prop"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_combinations_name_the_fix(code: SourceCode, case: str, prop: str) -> None:
    props = _refused(code, case)
    stack = props.pop("stack")
    with pytest.raises(ChainerValidationError) as raised:
        ChainerEndpoint(stack, "E", **props)
    assert raised.value.prop == prop
