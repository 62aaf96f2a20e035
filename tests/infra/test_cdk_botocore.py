"""The SageMaker API parameters we synthesize validate against botocore's own service model."""

from __future__ import annotations

import re
from typing import Any

import botocore.session
import pytest
from botocore.model import OperationModel, Shape
from botocore.validate import ParamValidator

from .render import fill, resources_of_type

MODEL = botocore.session.get_session().get_service_model("sagemaker")
JOB = "chainer-digits-0f8fad5b-d9cb-469f-a165-70867728950e"
# Sample values for the execution-time (".$") fields, by field name.
SAMPLES: dict[str, Any] = {
    "TrainingJobName": JOB,
    "ModelName": JOB,
    "EndpointConfigName": JOB,
    "S3Uri": "s3://data-bucket/digits/train",
    "ModelDataUrl": f"s3://artifacts/models/{JOB}/output/model.tar.gz",
    "HyperParameters": {
        "epochs": "10",
        "sagemaker_program": '"train.py"',
        "sagemaker_job_name": f'"{JOB}"',
    },
}
OPERATIONS = {
    "sagemaker:createTrainingJob.sync": "CreateTrainingJob",
    "aws-sdk:sagemaker:createModel": "CreateModel",
    "aws-sdk:sagemaker:createEndpointConfig": "CreateEndpointConfig",
    "aws-sdk:sagemaker:createEndpoint": "CreateEndpoint",
    "aws-sdk:sagemaker:updateEndpoint": "UpdateEndpoint",
    "aws-sdk:sagemaker:describeEndpoint": "DescribeEndpoint",
    "aws-sdk:sagemaker:deleteEndpoint": "DeleteEndpoint",
    "aws-sdk:sagemaker:listEndpointConfigs": "ListEndpointConfigs",
}


def _fill_paths(value: Any) -> Any:
    if isinstance(value, list):
        return [_fill_paths(v) for v in value]
    if not isinstance(value, dict):
        return value
    filled: dict[str, Any] = {}
    for key, item in value.items():
        if key.endswith(".$"):
            name = key[:-2]
            filled[name] = SAMPLES[name]
        else:
            filled[key] = _fill_paths(item)
    return filled


def _python_regex(pattern: str | None) -> re.Pattern[str] | None:
    """The model's (Java) pattern in Python, or None where Python cannot express it."""
    if not pattern:
        return None
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error:
        return None  # e.g. Java's \p{...} classes


def _pattern_errors(shape: Shape, value: Any, where: str) -> list[str]:
    """ParamValidator checks types, required members and minimums; add max and pattern."""
    errors: list[str] = []
    if shape.type_name == "structure" and isinstance(value, dict):
        for name, item in value.items():
            if name in shape.members:  # unknown members are ParamValidator's report
                errors += _pattern_errors(shape.members[name], item, f"{where}.{name}")
    elif shape.type_name == "list" and isinstance(value, list):
        for i, item in enumerate(value):
            errors += _pattern_errors(shape.member, item, f"{where}[{i}]")
    elif shape.type_name == "map" and isinstance(value, dict):
        for key, item in value.items():
            errors += _pattern_errors(shape.key, key, f"{where} key")
            errors += _pattern_errors(shape.value, item, f"{where}.{key}")
    elif shape.type_name == "string" and isinstance(value, str):
        limit = shape.metadata.get("max")
        if limit is not None and len(value) > limit:
            errors.append(f"{where}: longer than {limit}")
        pattern = _python_regex(shape.metadata.get("pattern"))
        if pattern is not None and not pattern.fullmatch(value):
            errors.append(f"{where}: {value!r} does not match {pattern.pattern}")
    elif shape.type_name == "integer" and isinstance(value, int):
        limit = shape.metadata.get("max")
        if limit is not None and value > limit:
            errors.append(f"{where}: above {limit}")
    return errors


def _validate(operation: OperationModel, params: dict[str, Any]) -> list[str]:
    report = ParamValidator().validate(params, operation.input_shape)
    errors = [report.generate_report()] if report.has_errors() else []
    return errors + _pattern_errors(operation.input_shape, params, operation.name)


@pytest.mark.parametrize("name", ["example_definition", "maximal_definition"])
def test_state_machine_parameters(request: pytest.FixtureRequest, name: str) -> None:
    definition = request.getfixturevalue(name)
    seen = set()
    for state_name, state in definition["States"].items():
        resource = state.get("Resource", "")
        integration = resource.split(":::", 1)[-1] if ":::" in resource else None
        if integration is None:
            continue
        operation = MODEL.operation_model(OPERATIONS[integration])
        params = _fill_paths(state["Parameters"])
        assert _validate(operation, params) == [], state_name
        seen.add(operation.name)
    assert seen == set(OPERATIONS.values())


def test_the_job_name_default_fits_the_api(example_definition: dict[str, Any]) -> None:
    """'<base_job_name>-<uuid>' must fit TrainingJobName (63 chars, its pattern)."""
    expression = example_definition["States"]["Defaults"]["Parameters"]["defaults"][
        "TrainingJobName.$"
    ]
    base = re.search(r"'([^']+)', States.UUID\(\)", expression)
    assert base is not None
    name = f"{base.group(1)}-0f8fad5b-d9cb-469f-a165-70867728950e"
    shape = MODEL.operation_model("CreateTrainingJob").input_shape.members["TrainingJobName"]
    assert _pattern_errors(shape, name, "TrainingJobName") == []


def test_training_request_without_a_pipeline(code_dir: Any) -> None:
    """``training_job_request()``: the full request another runner (local mode) would send."""
    import aws_cdk as cdk

    from .maximal import MaximalStack

    stack = MaximalStack(cdk.App(), "Request", code_dir=code_dir)
    request = fill(stack.resolve(stack.estimator.training_job_request(JOB)))
    assert request["HyperParameters"]["sagemaker_job_name"] == f'"{JOB}"'
    assert _validate(MODEL.operation_model("CreateTrainingJob"), request) == []


def test_the_checks_catch_bad_values() -> None:
    operation = MODEL.operation_model("DescribeEndpoint")
    assert _validate(operation, {"EndpointName": "bad_name"})
    assert _validate(operation, {"EndpointName": "x" * 64})
    assert _validate(operation, {"Endpoint": "x"})


CFN_OPERATIONS = {
    "AWS::SageMaker::Model": ("CreateModel", "ModelName"),
    "AWS::SageMaker::EndpointConfig": ("CreateEndpointConfig", "EndpointConfigName"),
    "AWS::SageMaker::Endpoint": ("CreateEndpoint", "EndpointName"),
}


@pytest.mark.parametrize("kind", sorted(CFN_OPERATIONS))
def test_cloudformation_properties(maximal_template: dict[str, Any], kind: str) -> None:
    operation_name, name_field = CFN_OPERATIONS[kind]
    operation = MODEL.operation_model(operation_name)
    resources = resources_of_type(maximal_template, kind)
    assert resources
    for logical_id, resource in resources.items():
        params = fill(resource["Properties"])
        params.setdefault(name_field, "generated-by-cloudformation")
        if kind == "AWS::SageMaker::Endpoint":
            params["EndpointConfigName"] = "endpointconfig"
            # CloudFormation passes this one to UpdateEndpoint (stack updates) only.
            retain = params.pop("RetainAllVariantProperties", None)
            if retain is not None:
                update = {**params, "RetainAllVariantProperties": retain}
                update.pop("Tags", None)
                assert _validate(MODEL.operation_model("UpdateEndpoint"), update) == []
        assert _validate(operation, params) == [], logical_id


def test_prop_fields_are_create_training_job_parameters() -> None:
    from chainer_sagemaker_cdk._estimator_checks import PROP_FIELDS

    shape = MODEL.operation_model("CreateTrainingJob").input_shape
    assert set(shape.members) >= PROP_FIELDS
