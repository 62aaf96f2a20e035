"""Synth cost of the constructs: the example app vs the same resources in bare aws-cdk-lib.

Both apps are built and synthesized in this one process (imports paid once, before timing),
alternating, into fresh temporary directories; the script prints the median wall time of each
and the overhead. Target: under 30%.

    .venv/bin/python benchmarks/synth_cost.py [--runs 7]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk  # noqa: E402
from aws_cdk import aws_ecr_assets as ecr_assets  # noqa: E402
from aws_cdk import aws_iam as iam  # noqa: E402
from aws_cdk import aws_kms as kms  # noqa: E402
from aws_cdk import aws_logs as logs  # noqa: E402
from aws_cdk import aws_s3 as s3  # noqa: E402
from aws_cdk import aws_s3_assets as s3_assets  # noqa: E402
from aws_cdk import aws_stepfunctions as sfn  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
STATEMENTS: dict[str, list[dict[str, Any]]] = {}


def _load_statements(example: Any) -> None:
    """The example's IAM statements (from one untimed synth), for the bare app to write."""
    with tempfile.TemporaryDirectory() as outdir:
        app = cdk.App(outdir=outdir)
        example.build_app(app)
        template = app.synth().get_stack_by_name("ChainerDigits").template
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            kind = "execution" if logical_id.startswith("Estimator") else "pipeline"
            STATEMENTS[kind] = [
                {**s, "Resource": _tokens(s["Resource"])}
                for s in resource["Properties"]["PolicyDocument"]["Statement"]]


def _tokens(value: Any) -> Any:
    """Intrinsics ({"Ref": ...}) as CDK token strings, which from_json accepts."""
    if isinstance(value, list):
        return [_tokens(v) for v in value]
    return cdk.Token.as_string(value) if isinstance(value, dict) else value


def _example_app() -> Any:
    spec = importlib.util.spec_from_file_location("chainer_example_app", REPO / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bucket(stack: cdk.Stack, id: str, key: kms.IKey | None) -> s3.Bucket:
    return s3.Bucket(
        stack, id, encryption=s3.BucketEncryption.KMS if key else s3.BucketEncryption.S3_MANAGED,
        encryption_key=key, enforce_ssl=True, versioned=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL)


def _task(stack: cdk.Stack, id: str, resource: str, params: dict[str, Any]) -> sfn.CustomState:
    return sfn.CustomState(stack, id, state_json={
        "Type": "Task", "Resource": f"arn:aws:states:::{resource}", "Parameters": params,
        "ResultPath": f"$.{id}"})


def build_bare(app: cdk.App) -> None:
    """The example stack's resources written with aws-cdk-lib alone (no packaging rules,
    no validation, no least-privilege helpers)."""
    stack = cdk.Stack(app, "Bare")
    logs_bucket = _bucket(stack, "AccessLogs", None)
    data_key = kms.Key(stack, "DataKey", enable_key_rotation=True)
    data = _bucket(stack, "Data", data_key)
    artifacts_key = kms.Key(stack, "ArtifactsKey", enable_key_rotation=True)
    artifacts = _bucket(stack, "Artifacts", artifacts_key)
    code = s3_assets.Asset(stack, "Code", path=str(REPO / "examples" / "digits"))
    image = ecr_assets.DockerImageAsset(stack, "Image", directory=str(REPO / "runtime"),
                                        build_args={"VARIANT": "cpu"})
    role = iam.Role(stack, "ExecutionRole",
                    assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"))
    policy = iam.ManagedPolicy(stack, "ExecutionPolicy", roles=[role])
    # The same statements the constructs write, one PolicyStatement each, as a hand-written
    # least-privilege app would have them.
    policy.add_statements(*[iam.PolicyStatement.from_json(s) for s in STATEMENTS["execution"]])
    sm_role = iam.Role(stack, "StateMachineRole",
                       assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
    sm_policy = iam.ManagedPolicy(stack, "StateMachinePolicy", roles=[sm_role])
    sm_policy.add_statements(*[iam.PolicyStatement.from_json(s) for s in STATEMENTS["pipeline"]])
    endpoint_key = kms.Key(stack, "EndpointKey", enable_key_rotation=True)
    logs_key = kms.Key(stack, "LogsKey", enable_key_rotation=True)
    log_group = logs.LogGroup(stack, "Logs", encryption_key=logs_key,
                              retention=logs.RetentionDays.ONE_YEAR)
    job = {"TrainingJobName.$": "$.name", "RoleArn": role.role_arn,
           "AlgorithmSpecification": {"TrainingImage": image.image_uri,
                                      "TrainingInputMode": "File"},
           "HyperParameters": {"sagemaker_program": '"train.py"',
                               "sagemaker_submit_directory": f'"{code.s3_object_url}"'},
           "OutputDataConfig": {"S3OutputPath": artifacts.s3_url_for_object("models")},
           "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 1,
                              "VolumeSizeInGB": 30},
           "StoppingCondition": {"MaxRuntimeInSeconds": 86400}}
    wait = sfn.Wait(stack, "Wait", time=sfn.WaitTime.duration(cdk.Duration.seconds(30)))
    describe = _task(stack, "Describe", "aws-sdk:sagemaker:describeEndpoint",
                     {"EndpointName": "chainer-digits"})
    done = sfn.Succeed(stack, "Done")
    check = sfn.Choice(stack, "Check").when(
        sfn.Condition.string_equals("$.Describe.EndpointStatus", "InService"), done
    ).otherwise(wait)
    update = _task(stack, "Update", "sagemaker:updateEndpoint", {"EndpointName": "chainer-digits"})
    create = _task(stack, "Create", "sagemaker:createEndpoint", {"EndpointName": "chainer-digits"})
    find = _task(stack, "Find", "aws-sdk:sagemaker:describeEndpoint",
                 {"EndpointName": "chainer-digits"})
    find.add_catch(create, errors=["States.TaskFailed"])
    create.next(wait)
    update.next(wait)
    wait.next(describe).next(check)
    definition = (
        sfn.Pass(stack, "Defaults").next(sfn.Pass(stack, "ApplyInput"))
        .next(sfn.Pass(stack, "Resolve"))
        .next(_task(stack, "Train", "sagemaker:createTrainingJob.sync", job))
        .next(_task(stack, "Model", "sagemaker:createModel", {"ModelName.$": "$.name"}))
        .next(_task(stack, "Config", "sagemaker:createEndpointConfig",
                    {"EndpointConfigName.$": "$.name", "KmsKeyId": endpoint_key.key_arn}))
        .next(find).next(update)
    )
    machine = sfn.StateMachine(
        stack, "StateMachine", definition_body=sfn.DefinitionBody.from_chainable(definition),
        tracing_enabled=True, role=sm_role,
        logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL))
    cdk.CfnOutput(stack, "StateMachineArn", value=machine.state_machine_arn)
    cdk.CfnOutput(stack, "EndpointName", value="chainer-digits")
    cdk.CfnOutput(stack, "ModelDataPrefix", value=artifacts.s3_url_for_object("models"))
    cdk.CfnOutput(stack, "DataBucket", value=data.bucket_name)
    del logs_bucket


def _time(build: Callable[[cdk.App], None]) -> float:
    with tempfile.TemporaryDirectory() as outdir:
        start = time.perf_counter()
        app = cdk.App(outdir=outdir)
        build(app)
        app.synth()
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    example = _example_app()

    def build_example(app: cdk.App) -> None:
        example.build_app(app)

    _load_statements(example)
    _time(build_example)  # warm-up: first jsii calls load modules
    _time(build_bare)
    ours: list[float] = []
    bare: list[float] = []
    for _ in range(args.runs):
        ours.append(_time(build_example))
        bare.append(_time(build_bare))
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    overhead = (ours_median / bare_median - 1) * 100
    print(f"runs: {args.runs} each, alternating, one process")
    print(f"example app (chainer_sagemaker_cdk): median {ours_median:.3f} s "
          f"(min {min(ours):.3f}, max {max(ours):.3f})")
    print(f"bare aws-cdk-lib equivalent:         median {bare_median:.3f} s "
          f"(min {min(bare):.3f}, max {max(bare):.3f})")
    print(f"overhead: {overhead:+.1f}% (target < 30%)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
