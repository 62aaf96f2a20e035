"""``ChainerTransformer`` and its Step Functions step at synth: the request SageMaker gets
(checked against botocore's service model), the rights each role gets, and bad props refused
in the user's words."""

from __future__ import annotations

import json
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_stepfunctions as sfn
from infra.render import fill, resources_of_type, state_machine_definition
from infra.test_cdk_botocore import MODEL, _validate

from chainer_sagemaker_cdk import (
    ChainerEstimator,
    ChainerModel,
    ChainerValidationError,
    ModelData,
    RuntimeImage,
    SourceCode,
    TrainingPipelineFragment,
)
from chainer_sagemaker_cdk.transformer import TRANSFORM_METADATA, ChainerTransformer

JOB = "score-digits--0f8fad5b-d9cb-469f-a165-70867728950e"
TRANSFORM = MODEL.operation_model("CreateTransformJob")


def _model(stack: cdk.Stack, code: SourceCode, image: RuntimeImage, **props: Any) -> ChainerModel:
    bucket = s3.Bucket.from_bucket_name(stack, "ModelBucket", "model-bucket")
    return ChainerModel(
        stack,
        "Model",
        model_data=ModelData.from_bucket(bucket, "job/model.tar.gz"),
        code=code,
        image=image,
        **props,
    )


class _Stacks:
    """One app: a transformer with every prop, run by a state machine of the user's own, and
    a training pipeline fragment followed by a transform of the model it creates."""

    def __init__(self, code: SourceCode, image: RuntimeImage) -> None:
        self.app = cdk.App()
        stack = self.stack = cdk.Stack(self.app, "Transform")
        model = _model(stack, code, image, instance_type="ml.c5.xlarge")
        self.data = s3.Bucket(stack, "Data", encryption=s3.BucketEncryption.KMS)
        self.results = s3.Bucket(stack, "Results")
        self.output_key = kms.Key(stack, "OutputKey", enable_key_rotation=True)
        self.transformer = ChainerTransformer(
            stack,
            "Score",
            model=model,
            input_bucket=self.data,
            input_prefix="digits/test/",
            output_bucket=self.results,
            output_prefix="scores",
            content_type="text/csv",
            split_type="Line",
            compression_type="Gzip",
            batch_strategy="MultiRecord",
            max_payload_in_mb=6,
            max_concurrent_transforms=4,
            assemble_with="Line",
            accept="text/csv",
            output_kms_key=self.output_key,
            instance_count=2,
            input_filter="$[1:]",
            output_filter="$[0,-1]",
            join_source="Input",
            invocations_timeout=cdk.Duration.minutes(5),
            invocations_max_retries=2,
            environment={"SCORE_THRESHOLD": "0.5"},
            tags={"team": "ml"},
            base_job_name="score-digits",
        )
        self.step = self.transformer.step(stack, "Run")
        role = iam.Role(
            stack, "MachineRole", assumed_by=iam.ServicePrincipal("states.amazonaws.com")
        )
        self.step.grant_run(role)
        sfn.StateMachine(
            stack,
            "Machine",
            definition_body=sfn.DefinitionBody.from_chainable(self.step),
            role=role,
        )
        pipe = self.pipeline_stack = cdk.Stack(self.app, "AfterTraining")
        estimator = ChainerEstimator(
            pipe, "Estimator", code=code, image=image, base_job_name="chainer-digits"
        )
        fragment = TrainingPipelineFragment(pipe, "Train", estimator=estimator)
        data = s3.Bucket.from_bucket_name(pipe, "Test", "test-data")
        self.pipeline_transformer = ChainerTransformer(
            pipe,
            "ScoreTestSet",
            pipeline=fragment,
            input_bucket=data,
            input_prefix="digits/test-csv",
            output_bucket=estimator.output_bucket,
            content_type="text/csv",
            split_type="Line",
        )
        after = self.pipeline_transformer.step(pipe, "ScoreAfter")
        machine_role = iam.Role(
            pipe, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com")
        )
        fragment.grant_run(machine_role)
        after.grant_run(machine_role)
        sfn.StateMachine(
            pipe,
            "Machine",
            definition_body=sfn.DefinitionBody.from_chainable(fragment.next(after)),
            role=machine_role,
        )
        assembly = self.app.synth()
        self.template = assembly.get_stack_by_name("Transform").template
        self.pipeline_template = assembly.get_stack_by_name("AfterTraining").template
        self.assembly = assembly


@pytest.fixture(scope="module")
def stacks(code: SourceCode, registry_image: RuntimeImage) -> _Stacks:
    return _Stacks(code, registry_image)


def _policies_of(template: dict[str, Any], role_fragment: str) -> list[dict[str, Any]]:
    """Every statement of the managed (and inline) policies attached to roles whose logical
    id contains ``role_fragment``."""
    statements = []
    for kind in ("AWS::IAM::ManagedPolicy", "AWS::IAM::Policy"):
        for policy in resources_of_type(template, kind).values():
            roles = json.dumps(policy["Properties"].get("Roles", []))
            if role_fragment in roles:
                statements += fill(policy["Properties"]["PolicyDocument"])["Statement"]
    return statements


def _actions(statement: dict[str, Any]) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def _resources(statement: dict[str, Any]) -> list[str]:
    resource = statement["Resource"]
    return resource if isinstance(resource, list) else [resource]


def _granted(statements: list[dict[str, Any]], action: str) -> list[dict[str, Any]]:
    return [s for s in statements if action in _actions(s)]


def test_request_validates_against_botocore(stacks: _Stacks) -> None:
    request = fill(stacks.stack.resolve(stacks.transformer.transform_job_request(JOB)))
    assert _validate(TRANSFORM, request) == []
    assert request["TransformInput"] == {
        "DataSource": {
            "S3DataSource": {
                "S3DataType": "S3Prefix",
                "S3Uri": request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"],
            }
        },
        "ContentType": "text/csv",
        "SplitType": "Line",
        "CompressionType": "Gzip",
    }
    assert request["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"].endswith("/digits/test")
    assert request["TransformOutput"]["AssembleWith"] == "Line"
    assert request["TransformOutput"]["KmsKeyId"].startswith("arn:")
    assert request["TransformResources"]["InstanceType"] == "ml.c5.xlarge"
    assert request["TransformResources"]["VolumeKmsKeyId"].startswith("arn:")
    assert request["ModelClientConfig"] == {
        "InvocationsTimeoutInSeconds": 300,
        "InvocationsMaxRetries": 2,
    }
    assert request["DataProcessing"] == {
        "InputFilter": "$[1:]",
        "OutputFilter": "$[0,-1]",
        "JoinSource": "Input",
    }
    assert request["Tags"] == [{"Key": "team", "Value": "ml"}]


def test_the_state_machine_task_validates_against_botocore(stacks: _Stacks) -> None:
    for template, name in ((stacks.template, "score-digits"), (stacks.pipeline_template, None)):
        states = state_machine_definition(template)["States"]
        task = states["Transform"] if "Transform" in states else states["ScoreAfter"]
        assert task["Resource"] == "arn:aws:states:::sagemaker:createTransformJob.sync"
        params = _fill_samples(task["Parameters"])
        assert _validate(TRANSFORM, params) == []
        assert [r["ErrorEquals"] for r in task["Retry"]] == [
            ["SageMaker.ResourceLimitExceededException"],
            ["SageMaker.AmazonSageMakerException", "ThrottlingException"],
        ]
        if name:
            defaults = states["TransformDefaults"]["Parameters"]
            assert f"'{name}', States.UUID()" in defaults["TransformJobName.$"]


def _fill_samples(value: Any) -> Any:
    samples = {
        "TransformJobName": JOB,
        "ModelName": "chainer-digits-1234",
        "S3Uri": "s3://data/digits/test",
        "S3OutputPath": "s3://results/scores",
    }
    if isinstance(value, list):
        return [_fill_samples(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key.endswith(".$"):
            out[key[:-2]] = samples[key[:-2]]
        else:
            out[key] = _fill_samples(item)
    return out


def test_pipeline_step_scores_with_the_model_just_trained(stacks: _Stacks) -> None:
    states = state_machine_definition(stacks.pipeline_template)["States"]
    defaults = next(s for n, s in states.items() if n.endswith("TransformDefaults"))["Parameters"]
    assert defaults["ModelName.$"] == "$.training.TrainingJobName"
    assert defaults["TransformJobName.$"] == "$.training.TrainingJobName"
    # the pipeline's model runs as the pipeline's serving role: that role reads the test set
    role_statements = _policies_of(stacks.pipeline_template, "ServingRole")
    reads = _granted(role_statements, "s3:GetObject")
    assert any("test-data/digits/test-csv/*" in r for s in reads for r in _resources(s))
    # the training job's name, '<estimator base>--<uuid>', is one the machine's role reaches
    jobs = _granted(_policies_of(stacks.pipeline_template, "Role"), "sagemaker:CreateTransformJob")
    assert [r for s in jobs for r in _resources(s)] == [
        "arn:aws:sagemaker:us-east-1:123456789012:transform-job/chainer-digits--*"
    ]


def test_a_pipelines_transformer_with_a_base_of_its_own_generates_its_job_names(
    code: SourceCode, registry_image: RuntimeImage
) -> None:
    """The training job's name is not one of ``score-digits``' jobs: the step generates
    ``score-digits--<uuid>`` (which its role reaches) instead of taking that name."""
    stack = cdk.Stack(cdk.App(), "OwnBase")
    estimator = ChainerEstimator(
        stack, "Estimator", code=code, image=registry_image, base_job_name="chainer-digits"
    )
    fragment = TrainingPipelineFragment(stack, "Train", estimator=estimator)
    transformer = ChainerTransformer(
        stack,
        "Score",
        pipeline=fragment,
        input_bucket=estimator.output_bucket,
        output_bucket=estimator.output_bucket,
        base_job_name="score-digits",
    )
    defaults = transformer.step(stack, "Run").defaults_state.to_state_json()["Parameters"]
    assert defaults["ModelName.$"] == "$.training.TrainingJobName"
    assert "'score-digits', States.UUID()" in defaults["TransformJobName.$"]


def test_transformers_of_the_same_id_in_two_stacks_get_distinct_default_bases(
    code: SourceCode, registry_image: RuntimeImage
) -> None:
    """Left out, the base is the construct id and a digest of its path (as the estimator's),
    so two stacks' ``Score`` transformers never reach each other's jobs."""
    app = cdk.App()
    bases = []
    for name in ("Nightly", "Weekly"):
        stack = cdk.Stack(app, name)
        bucket = s3.Bucket(stack, "Data")
        transformer = ChainerTransformer(
            stack,
            "Score",
            model=_model(stack, code, registry_image),
            input_bucket=bucket,
            output_bucket=bucket,
        )
        bases.append(transformer.base_job_name)
    assert bases[0] != bases[1]
    assert all(b.startswith("score-") and len(b) <= 25 and "--" not in b for b in bases)


def test_model_role_reads_the_input_and_only_writes_the_output(stacks: _Stacks) -> None:
    statements = _policies_of(stacks.template, "ModelExecutionRole")
    listing = [s for s in _granted(statements, "s3:ListBucket") if "Condition" in s]
    assert any(
        s["Condition"] == {"StringLike": {"s3:prefix": ["digits/test", "digits/test/*"]}}
        for s in listing
    )
    gets = [r for s in _granted(statements, "s3:GetObject") for r in _resources(s)]
    assert any(r.endswith("/digits/test/*") for r in gets)
    assert not any("scores" in r for r in gets), "the job never reads its results"
    puts = [r for s in _granted(statements, "s3:PutObject") for r in _resources(s)]
    assert puts
    assert all(r.endswith("/scores/*") for r in puts)
    assert not _granted(statements, "s3:DeleteObject")
    assert all(a != "*" and not a.endswith(":*") for s in statements for a in _actions(s))
    logs = [r for s in _granted(statements, "logs:PutLogEvents") for r in _resources(s)]
    assert any("/aws/sagemaker/TransformJobs:log-stream:" in r for r in logs)
    encrypting = {r for s in _granted(statements, "kms:GenerateDataKey") for r in _resources(s)}
    assert len(encrypting) == 2  # the output key and the volume key
    decrypting = {r for s in _granted(statements, "kms:Decrypt") for r in _resources(s)}
    assert any("datakey" in r for r in decrypting - encrypting)  # the input bucket's key


def test_state_machine_role_as_the_step_functions_guide_lists(stacks: _Stacks) -> None:
    statements = _policies_of(stacks.template, "MachineRole")
    jobs = _granted(statements, "sagemaker:CreateTransformJob")
    assert len(jobs) == 1
    assert set(_actions(jobs[0])) >= {
        "sagemaker:CreateTransformJob",
        "sagemaker:DescribeTransformJob",
        "sagemaker:StopTransformJob",
        "sagemaker:AddTags",
        "sagemaker:ListTags",
    }
    assert _resources(jobs[0]) == [
        "arn:aws:sagemaker:us-east-1:123456789012:transform-job/score-digits--*"
    ]
    rule = _granted(statements, "events:PutRule")
    assert _resources(rule[0]) == [
        "arn:aws:events:us-east-1:123456789012:rule/StepFunctionsGetEventsForSageMakerTransformJobsRule"
    ]
    assert not _granted(statements, "iam:PassRole"), "transform jobs run as their model's role"


def test_local_mode_metadata(stacks: _Stacks) -> None:
    from pathlib import Path

    from chainer_sagemaker_cdk.local.assembly import CloudAssembly

    entries = CloudAssembly(Path(stacks.assembly.directory))._entries(
        "Transform", TRANSFORM_METADATA
    )
    assert [path for path, _ in entries] == ["/Transform/Score"]
    data = entries[0][1]
    assert data["modelPath"] == "Transform/Model"
    assert data["transformInput"] == {
        "ContentType": "text/csv",
        "SplitType": "Line",
        "CompressionType": "Gzip",
    }
    assert data["batchStrategy"] == "MultiRecord"
    assert data["dataProcessing"]["JoinSource"] == "Input"


BAD = [
    ({"split_type": "line"}, "split_type", "None, Line, RecordIO, TFRecord"),
    ({"batch_strategy": "MULTI_RECORD"}, "batch_strategy", "SingleRecord, MultiRecord"),
    ({"max_payload_in_mb": 101}, "max_payload_in_mb", "0 to 100"),
    (
        {"max_payload_in_mb": 20, "max_concurrent_transforms": 8},
        "max_concurrent_transforms*max_payload_in_mb",
        "at most 100 MB",
    ),
    ({"invocations_max_retries": 4}, "invocations_max_retries", "0 to 3"),
    ({"invocations_timeout": cdk.Duration.hours(2)}, "invocations_timeout", "1 second to 1 hour"),
    ({"input_filter": "features"}, "input_filter", "starts with $"),
    ({"environment": {f"V{i}": "x" for i in range(17)}}, "environment", "at most 16"),
    ({"base_job_name": "x" * 26}, "base_job_name", "at most 25"),
    ({"base_job_name": "score--digits"}, "base_job_name", "'--'"),
    ({"instance_type": "ml.g5.xlarge"}, "encrypt_volume", "set encrypt_volume=False"),
    ({"encrypt_volume": False, "volume_kms_key": "key"}, "volume_kms_key", "encrypt_volume=True"),
]


@pytest.mark.parametrize(("props", "prop", "fix"), BAD, ids=[b[1] for b in BAD])
def test_bad_props_are_refused_in_the_users_words(
    code: SourceCode, registry_image: RuntimeImage, props: dict[str, Any], prop: str, fix: str
) -> None:
    stack = cdk.Stack(cdk.App(), "Bad")
    model = _model(stack, code, registry_image)
    bucket = s3.Bucket.from_bucket_name(stack, "Data", "data")
    if props.get("volume_kms_key") == "key":
        props = {
            **props,
            "volume_kms_key": kms.Key.from_key_arn(stack, "K", "arn:aws:kms:us-east-1:1:key/k"),
        }
    with pytest.raises(ChainerValidationError) as caught:
        ChainerTransformer(
            stack, "T", model=model, input_bucket=bucket, output_bucket=bucket, **props
        )
    assert caught.value.prop == prop
    assert fix in str(caught.value)


def test_nvme_instances_run_without_a_volume_key(
    code: SourceCode, registry_image: RuntimeImage
) -> None:
    stack = cdk.Stack(cdk.App(), "Nvme")
    bucket = s3.Bucket.from_bucket_name(stack, "Data", "data")
    transformer = ChainerTransformer(
        stack,
        "T",
        model=_model(stack, code, registry_image),
        input_bucket=bucket,
        output_bucket=bucket,
        instance_type="g5.xlarge",
        encrypt_volume=False,
    )
    request = fill(stack.resolve(transformer.transform_job_request(JOB)))
    assert request["TransformResources"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1}
    assert _validate(TRANSFORM, request) == []


def test_a_pipeline_that_does_not_deploy_has_no_model(
    code: SourceCode, registry_image: RuntimeImage
) -> None:
    stack = cdk.Stack(cdk.App(), "NoModel")
    estimator = ChainerEstimator(stack, "E", code=code, image=registry_image)
    fragment = TrainingPipelineFragment(stack, "Train", estimator=estimator, deploy=False)
    bucket = s3.Bucket.from_bucket_name(stack, "Data", "data")
    with pytest.raises(ChainerValidationError, match="only when it deploys"):
        ChainerTransformer(stack, "T", pipeline=fragment, input_bucket=bucket, output_bucket=bucket)


def test_the_request_of_a_pipeline_model_needs_its_name(stacks: _Stacks) -> None:
    with pytest.raises(ChainerValidationError, match="model_name"):
        stacks.pipeline_transformer.transform_job_request(JOB)
    request = stacks.pipeline_stack.resolve(
        stacks.pipeline_transformer.transform_job_request(JOB, "chainer-digits-1")
    )
    assert _validate(TRANSFORM, fill(request)) == []


def test_a_scoring_state_machine_passes_the_compliance_packs(
    code: SourceCode, registry_image: RuntimeImage, tmp_path: Any
) -> None:
    """AwsSolutions, HIPAA Security and NIST 800-53 R5 (nag_app fails synth on any finding):
    the model role's and the state machine role's scoped wildcards are all explained."""
    from aws_cdk import aws_logs as logs
    from infra.conftest import nag_app

    from chainer_sagemaker_cdk import _iam

    app = nag_app(tmp_path)
    stack = cdk.Stack(app, "Nag")
    data = s3.Bucket.from_bucket_name(stack, "Data", "data")
    transformer = ChainerTransformer(
        stack,
        "Score",
        model=_model(stack, code, registry_image),
        input_bucket=data,
        input_prefix="in",
        output_bucket=data,
        output_prefix="out",
        content_type="text/csv",
        split_type="Line",
    )
    step = transformer.step(stack, "Run")
    key = kms.Key(stack, "LogsKey", enable_key_rotation=True)
    key.grant_encrypt_decrypt(iam.ServicePrincipal(f"logs.{stack.region}.{stack.url_suffix}"))
    group = logs.LogGroup(stack, "Logs", encryption_key=key, retention=logs.RetentionDays.ONE_YEAR)
    role = iam.Role(stack, "Role", assumed_by=iam.ServicePrincipal("states.amazonaws.com"))
    principal = _iam.PolicyPrincipal.for_role(stack, "Policy", role)
    step.grant_run(principal)  # type: ignore[arg-type]
    _iam.add(
        principal,  # type: ignore[arg-type]
        iam.PolicyStatement(actions=list(_iam.LOG_DELIVERY_ACTIONS), resources=["*"]),
        iam.PolicyStatement(
            actions=["xray:PutTraceSegments", "xray:PutTelemetryRecords"], resources=["*"]
        ),
    )
    sfn.StateMachine(
        stack,
        "Machine",
        definition_body=sfn.DefinitionBody.from_chainable(step),
        role=role.without_policy_updates(),
        tracing_enabled=True,
        logs=sfn.LogOptions(destination=group, level=sfn.LogLevel.ALL),
    )
    app.synth()  # raises on any finding


def test_local_mode_finds_the_model_of_each_transformer(stacks: _Stacks) -> None:
    """What `local transform` runs: a ChainerModel's environment and code, or for a
    pipeline's model the training job's program and code (its data comes from --model-data)."""
    import argparse
    from pathlib import Path

    from chainer_sagemaker_cdk.local.transform import _model_from_assembly

    def resolve(stack: str) -> Any:
        args = argparse.Namespace(
            cdk_out=Path(stacks.assembly.directory), stack=stack, transformer=None, model=None
        )
        return _model_from_assembly(args)

    config, env, code, data = resolve("Transform")
    assert (config.split_type, config.batch_strategy, config.join_source) == (
        "Line",
        "MultiRecord",
        "Input",
    )
    assert config.environment == {"SCORE_THRESHOLD": "0.5"}
    assert env["SAGEMAKER_PROGRAM"] == "train.py"
    assert code is not None
    assert Path(code).exists()
    assert data is None  # S3 model data: local mode needs --model-data
    config, env, code, data = resolve("AfterTraining")
    assert env == {"SAGEMAKER_PROGRAM": "train.py"}
    assert code is not None
    assert Path(code).exists()
    assert config.content_type == "text/csv"
