"""Synth cost of the constructs: the example app vs the same resources in bare aws-cdk-lib.

Two measurements, both alternating the two apps and reporting medians:

* ``process``: a fresh interpreter per run that imports aws-cdk-lib, builds one app and
  synthesizes it (what ``cdk synth`` costs a user; same process start for both);
* ``in-process``: build + synth only, both apps in this one process after the imports:
  wall-clock time, and the CPU time of this process plus jsii's node kernel (steadier than
  wall-clock on a loaded machine), and the round trips to the kernel (deterministic: each
  costs about as much as creating a construct).

The bare app has the example stack's resources, properties, IAM statements (per role),
states and acknowledgements, written directly with aws-cdk-lib (a zip asset instead of the
deterministic ``sourcedir.tar.gz``): the core states by hand, the example's further states
(endpoint lifecycle, clean-up, input checks) mirrored by type with aws-cdk-lib's classes and
the same task parameters and retries. Target: the constructs add under 30%.

    .venv/bin/python benchmarks/synth_cost.py [--runs 7] [--process-runs 5]
    .venv/bin/python benchmarks/synth_cost.py --profile 30   # round trips per call site
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")

import aws_cdk as cdk
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.infra.render import fill  # noqa: E402  (sample values for the template's tokens)

STATEMENTS_FILE = "statements.json"


def _example_app() -> Any:
    spec = importlib.util.spec_from_file_location("chainer_example_app", REPO / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def example_statements() -> dict[str, list[dict[str, Any]]]:
    """The example's IAM statements (from one untimed synth), for the bare app to write."""
    statements: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as outdir:
        app = cdk.App(outdir=outdir)
        _example_app().build_app(app)
        template = app.synth().get_stack_by_name("ChainerDigits").template
    for logical_id, resource in template["Resources"].items():
        if resource["Type"] == "AWS::IAM::ManagedPolicy":
            if logical_id.startswith("Estimator"):
                kind = "execution"
            elif logical_id.startswith("PipelineServing"):
                kind = "serving"
            else:
                kind = "pipeline"
            statements.setdefault(kind, []).extend(
                resource["Properties"]["PolicyDocument"]["Statement"]
            )
        if resource["Type"] == "AWS::StepFunctions::StateMachine":
            definition = json.loads(fill(resource["Properties"]["DefinitionString"]))
            statements["states"] = [
                {"Name": name, **state}
                for name, state in definition["States"].items()
                if name not in HAND_BUILT
            ]
    return statements


# The example's states the bare app builds by hand (with the same tokens); the others are
# mirrored by type (_mirror), so both state machines have the same states and task parameters.
HAND_BUILT = frozenset(
    {
        "Defaults",
        "ApplyInput",
        "ResolveConfig",
        "Train",
        "CreateModel",
        "CreateEndpointConfig",
        "FindEndpoint",
        "UpdateEndpoint",
        "CreateEndpoint",
        "WaitForEndpoint",
        "DescribeEndpoint",
        "EndpointStatus",
        "EndpointInService",
        "EndpointFailed",
        "EndpointNotUpdated",
    }
)
_FLOW = ("Next", "End", "Catch", "Retry", "Type", "Name", "Comment")


def _mirror(stack: cdk.Stack, states: list[dict[str, Any]]) -> sfn.IChainable:
    """aws-cdk-lib states of the same types, parameters and retries as ``states``."""
    fails = [
        sfn.Fail(stack, f"M{st['Name']}", error=st.get("Error"), cause=st.get("Cause"))
        for st in states
        if st["Type"] == "Fail"
    ] or [sfn.Fail(stack, "MFail")]
    steps: list[Any] = []
    for st in states:
        name, kind = f"M{st['Name']}", st["Type"]
        body = {k: v for k, v in st.items() if k not in _FLOW}
        if kind == "Task":
            task = sfn.CustomState(stack, name, state_json={"Type": "Task", **body})
            for retry in st.get("Retry", []):
                task.add_retry(
                    errors=retry["ErrorEquals"],
                    max_attempts=retry.get("MaxAttempts"),
                    backoff_rate=retry.get("BackoffRate"),
                    interval=cdk.Duration.seconds(retry.get("IntervalSeconds", 1)),
                )
            for catch in st.get("Catch", []):
                task.add_catch(fails[0], errors=catch["ErrorEquals"], result_path="$.error")
            steps.append(task)
        elif kind == "Pass":
            steps.append(sfn.Pass(stack, name, parameters=body.get("Parameters")))
        elif kind == "Wait":
            steps.append(
                sfn.Wait(stack, name, time=sfn.WaitTime.duration(cdk.Duration.seconds(30)))
            )
        elif kind == "Map":
            mapped = sfn.Map(stack, name, items_path=body.get("ItemsPath", "$.items"))
            mapped.item_processor(sfn.Pass(stack, f"{name}Item"))
            steps.append(mapped)
        elif kind == "Choice":
            steps.append((sfn.Choice(stack, name), len(st.get("Choices", []))))
    end: sfn.IChainable = sfn.Succeed(stack, "MDone")
    for step in reversed(steps):  # build from the end: each step goes on to the next
        if isinstance(step, tuple):
            choice, rules = step
            for i in range(max(rules, 1)):
                choice.when(sfn.Condition.is_present(f"$.rule{i}"), fails[i % len(fails)])
            end = choice.otherwise(end)
        else:
            end = step.next(end)  # type: ignore[union-attr]
    return end


def _tokens(value: Any) -> Any:
    """Intrinsics ({"Ref": ...}) as CDK token strings, which from_json accepts."""
    if isinstance(value, list):
        return [_tokens(v) for v in value]
    if (
        isinstance(value, dict)
        and len(value) == 1
        and next(iter(value)).startswith(("Ref", "Fn::"))
    ):
        return cdk.Token.as_string(value)
    if isinstance(value, dict):
        return {k: _tokens(v) for k, v in value.items()}
    return value


def _policy(stack: cdk.Stack, id: str, role: iam.IRole, statements: list[dict[str, Any]]) -> None:
    policy = iam.ManagedPolicy(stack, id, roles=[role])
    policy.add_statements(
        *[
            iam.PolicyStatement.from_json(
                {**s, "Resource": _tokens(s["Resource"]), "Condition": _tokens(s.get("Condition"))}
                if s.get("Condition")
                else {**s, "Resource": _tokens(s["Resource"])}
            )
            for s in statements
        ]
    )


def _bucket(
    stack: Construct, id: str, key: kms.IKey | None, logs_bucket: s3.IBucket | None = None
) -> s3.Bucket:
    return s3.Bucket(
        stack,
        id,
        encryption=s3.BucketEncryption.KMS if key else s3.BucketEncryption.S3_MANAGED,
        encryption_key=key,
        bucket_key_enabled=bool(key),
        enforce_ssl=True,
        versioned=True,
        block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
        server_access_logs_bucket=logs_bucket,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )


def _task(stack: cdk.Stack, id: str, resource: str, params: dict[str, Any]) -> sfn.CustomState:
    return sfn.CustomState(
        stack,
        id,
        state_json={
            "Type": "Task",
            "Resource": f"arn:aws:states:::{resource}",
            "Parameters": params,
            "ResultPath": f"$.{id}",
        },
    )


def build_bare(app: cdk.App, statements: dict[str, list[dict[str, Any]]]) -> None:
    stack = cdk.Stack(app, "Bare")
    logs_bucket = _bucket(stack, "AccessLogs", None)
    data = _bucket(stack, "Data", kms.Key(stack, "DataKey", enable_key_rotation=True), logs_bucket)
    # Same construct paths as the example, so the statements' logical IDs name these resources.
    scope = Construct(stack, "Estimator")
    artifacts = _bucket(
        scope, "Artifacts", kms.Key(scope, "ArtifactsKey", enable_key_rotation=True), logs_bucket
    )
    for bucket in (logs_bucket, data, artifacts):
        cdk.Validations.of(bucket).acknowledge(
            *[
                cdk.Acknowledgment(id=f"{p}-S3BucketReplicationEnabled", reason="single region")
                for p in ("HIPAA.Security", "NIST.800.53.R5")
            ]
        )
    cdk.Validations.of(logs_bucket).acknowledge(
        *[
            cdk.Acknowledgment(id=f"{p}-S3DefaultEncryptionKMS", reason="access logs: SSE-S3")
            for p in ("HIPAA.Security", "NIST.800.53.R5")
        ]
    )
    code = s3_assets.Asset(stack, "Code", path=str(REPO / "examples" / "digits"))
    image = ecr_assets.DockerImageAsset(
        stack,
        "Image",
        directory=str(REPO / "runtime"),
        build_args={"VARIANT": "cpu"},
        platform=ecr_assets.Platform.LINUX_AMD64,
    )
    role = iam.Role(
        scope, "ExecutionRole", assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com")
    )
    _policy(stack, "ExecutionPolicy", role, statements["execution"])
    sm_role = iam.Role(
        stack, "StateMachineRole", assumed_by=iam.ServicePrincipal("states.amazonaws.com")
    )
    _policy(stack, "StateMachinePolicy", sm_role, statements["pipeline"])
    pipeline_scope = Construct(Construct(stack, "Pipeline"), "Pipeline")
    if "serving" in statements:
        serving = iam.Role(
            pipeline_scope,
            "ServingRole",
            assumed_by=iam.ServicePrincipal("sagemaker.amazonaws.com"),
        )
        _policy(stack, "ServingPolicy", serving, statements["serving"])
    endpoint_key = kms.Key(pipeline_scope, "EndpointStorageKey", enable_key_rotation=True)
    logs_key = kms.Key(stack, "LogsKey", enable_key_rotation=True)
    logs_key.grant_encrypt_decrypt(iam.ServicePrincipal(f"logs.{stack.region}.amazonaws.com"))
    log_group = logs.LogGroup(
        stack,
        "Logs",
        encryption_key=logs_key,
        retention=logs.RetentionDays.ONE_YEAR,
        removal_policy=cdk.RemovalPolicy.RETAIN,
    )
    job = {
        "TrainingJobName.$": "$.config.TrainingJobName",
        "RoleArn": role.role_arn,
        "AlgorithmSpecification": {"TrainingImage": image.image_uri, "TrainingInputMode": "File"},
        "HyperParameters.$": "$.config.Hyperparameters",
        "InputDataConfig": [
            {
                "ChannelName": c,
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri.$": f"$.config.Channels.{c}"}
                },
            }
            for c in ("train", "test")
        ],
        "OutputDataConfig": {"S3OutputPath": artifacts.s3_url_for_object("models")},
        "ResourceConfig": {
            "InstanceType": "ml.m5.xlarge",
            "InstanceCount": 1,
            "VolumeSizeInGB": 30,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": 86400},
    }
    env = {
        "SAGEMAKER_PROGRAM": "train.py",
        "SAGEMAKER_SUBMIT_DIRECTORY": code.s3_object_url,
        "SAGEMAKER_REGION": stack.region,
    }
    wait = sfn.Wait(stack, "Wait", time=sfn.WaitTime.duration(cdk.Duration.seconds(30)))
    describe = _task(
        stack, "Describe", "aws-sdk:sagemaker:describeEndpoint", {"EndpointName": "chainer-digits"}
    )
    status = "$.Describe.EndpointStatus"
    check = (
        sfn.Choice(stack, "Check")
        .when(
            sfn.Condition.or_(
                *[
                    sfn.Condition.string_equals(status, s)
                    for s in ("Creating", "Updating", "SystemUpdating")
                ]
            ),
            wait,
        )
        .when(
            sfn.Condition.and_(
                sfn.Condition.string_equals(status, "InService"),
                sfn.Condition.string_equals_json_path("$.a", "$.b"),
            ),
            sfn.Pass(stack, "InService").next(_mirror(stack, statements.get("states", []))),
        )
        .when(
            sfn.Condition.is_present("$.Describe.FailureReason"),
            sfn.Fail(stack, "Failed", cause_path="$.Describe.FailureReason"),
        )
        .otherwise(sfn.Fail(stack, "NotUpdated", cause="not updated"))
    )
    update = _task(stack, "Update", "sagemaker:updateEndpoint", {"EndpointName": "chainer-digits"})
    create = _task(stack, "Create", "sagemaker:createEndpoint", {"EndpointName": "chainer-digits"})
    find = _task(
        stack, "Find", "aws-sdk:sagemaker:describeEndpoint", {"EndpointName": "chainer-digits"}
    )
    find.add_catch(create, errors=["States.TaskFailed"])
    create.next(wait)
    update.next(wait)
    wait.next(describe).next(check)
    definition = (
        sfn.Pass(
            stack,
            "Defaults",
            parameters={
                "defaults": {
                    "TrainingJobName": sfn.JsonPath.format(
                        "{}--{}", "chainer-digits", sfn.JsonPath.uuid()
                    )
                },
                "input.$": "$",
            },
        )
        .next(sfn.Pass(stack, "ApplyInput"))
        .next(sfn.Pass(stack, "Resolve"))
        .next(_task(stack, "Train", "sagemaker:createTrainingJob.sync", job))
        .next(
            _task(
                stack,
                "Model",
                "sagemaker:createModel",
                {
                    "ModelName.$": "$.name",
                    "ExecutionRoleArn": role.role_arn,
                    "PrimaryContainer": {"Image": image.image_uri, "Environment": env},
                },
            )
        )
        .next(
            _task(
                stack,
                "Config",
                "sagemaker:createEndpointConfig",
                {"EndpointConfigName.$": "$.name", "KmsKeyId": endpoint_key.key_arn},
            )
        )
        .next(find)
        .next(update)
    )
    machine = sfn.StateMachine(
        stack,
        "StateMachine",
        definition_body=sfn.DefinitionBody.from_chainable(definition),
        tracing_enabled=True,
        role=sm_role.without_policy_updates(),
        timeout=cdk.Duration.hours(26),
        logs=sfn.LogOptions(
            destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=True
        ),
    )
    cdk.CfnOutput(stack, "StateMachineArn", value=machine.state_machine_arn)
    cdk.CfnOutput(stack, "EndpointName", value="chainer-digits")
    cdk.CfnOutput(stack, "ModelDataPrefix", value=artifacts.s3_url_for_object("models"))
    cdk.CfnOutput(stack, "DataBucket", value=data.bucket_name)


_KERNEL: list[Any] = []


def _kernel_process() -> Any:
    """jsii's node process (the kernel every aws-cdk-lib call goes to), found once."""
    if not _KERNEL:
        from jsii._kernel.providers import process as jsii_process

        _KERNEL.extend(o for o in gc.get_objects() if isinstance(o, jsii_process._NodeProcess))
    return _KERNEL[0]


def _kernel_cpu(pid: int) -> float:
    """CPU seconds the kernel process has used: the run time of all its threads in
    nanoseconds (/proc/<pid>/task/*/schedstat), else user + system in clock ticks
    (/proc/<pid>/stat, 10 ms steps: coarse for a build of some 50 ms)."""
    try:
        return (
            sum(
                int(stat.read_text().split()[0])
                for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Sample:
    wall: float
    cpu: float
    round_trips: int


PACKAGE = REPO / "constructs" / "chainer_sagemaker_cdk"


_CALLBACKS: list[str] = []  # callbacks (Node calling a Python object) being answered


def _call_site(request: Any) -> str:
    """The innermost frame of the constructs (or the app) that led to this round trip; a
    callback and the answer to it count under the Python class and method Node called."""
    site = "(aws-cdk-lib)"
    for frame in reversed(traceback.extract_stack()):
        if frame.filename.startswith(str(PACKAGE)) or frame.filename == str(REPO / "app.py"):
            site = f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
            break
    if _CALLBACKS:
        if type(request).__name__ in ("CompleteRequest", "_CompleteRequest"):
            return f"{_CALLBACKS.pop()}: answer"
        return f"{_CALLBACKS[-1]}: {site}"
    return site


def _label_callbacks() -> Callable[[], None]:
    """Note each callback's Python class and method until its answer is sent; returns the
    function that undoes this."""
    from jsii import _kernel

    handle = _kernel._handle_callback

    def handling(kernel: Any, callback: Any) -> Any:
        request = callback.invoke or callback.get or callback.set
        target = _kernel._reference_map.resolve_id(request.objref.ref)
        _CALLBACKS.append(f"(callback) {type(target).__name__}.{callback.cookie}")
        return handle(kernel, callback)

    _kernel._handle_callback = handling

    def restore() -> None:
        _kernel._handle_callback = handle

    return restore


def _measure(build: Callable[[cdk.App], None], sites: Counter[str] | None = None) -> Sample:
    """One build + synth: wall-clock, CPU of both processes, and kernel round trips (with
    ``sites``: counted per call site, which slows the run down)."""
    kernel = _kernel_process()
    pid = kernel._process.pid
    send = type(kernel).send
    trips = [0]

    def counting(self: Any, request: Any, response_type: Any) -> Any:
        trips[0] += 1
        if sites is not None:
            sites[_call_site(request)] += 1
        return send(self, request, response_type)

    type(kernel).send = counting
    try:
        with tempfile.TemporaryDirectory() as outdir:
            cpu, kernel_cpu = time.process_time(), _kernel_cpu(pid)
            start = time.perf_counter()
            app = cdk.App(outdir=outdir)
            build(app)
            app.synth()
            wall = time.perf_counter() - start
            used = time.process_time() - cpu + _kernel_cpu(pid) - kernel_cpu
    finally:
        type(kernel).send = send
    return Sample(wall, used, trips[0])


def _time(build: Callable[[cdk.App], None]) -> float:
    return _measure(build).wall


def _one(which: str, statements_path: Path) -> None:
    """Child mode: build and synthesize one app (the parent times the whole process)."""
    with tempfile.TemporaryDirectory() as outdir:
        app = cdk.App(outdir=outdir)
        if which == "example":
            _example_app().build_app(app)
        else:
            build_bare(app, json.loads(statements_path.read_text()))
        app.synth()


def _process_time(which: str, statements_path: Path) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, __file__, "--one", which, "--statements", str(statements_path)],
        check=True,
        capture_output=True,
    )
    return time.perf_counter() - start


def _report(label: str, ours: list[float], bare: list[float]) -> None:
    ours_median, bare_median = statistics.median(ours), statistics.median(bare)
    overhead = (ours_median / bare_median - 1) * 100
    print(f"{label}: {len(ours)} runs each, alternating")
    print(
        f"  example app (chainer_sagemaker_cdk): median {ours_median:.3f} s "
        f"(min {min(ours):.3f}, max {max(ours):.3f})"
    )
    print(
        f"  bare aws-cdk-lib equivalent:         median {bare_median:.3f} s "
        f"(min {min(bare):.3f}, max {max(bare):.3f})"
    )
    print(f"  overhead: {overhead:+.1f}% (target < 30%)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=11, help="in-process runs per app")
    parser.add_argument("--process-runs", type=int, default=5, help="fresh processes per app")
    parser.add_argument(
        "--profile",
        type=int,
        metavar="N",
        help="print the N call sites of the example app with the most round trips, then stop",
    )
    parser.add_argument("--one", choices=["example", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--statements", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        _one(args.one, args.statements)
        return 0
    statements = example_statements()
    example = _example_app()
    if args.profile:
        sites: Counter[str] = Counter()
        _time(example.build_app)  # warm-up
        restore = _label_callbacks()
        try:
            total = _measure(example.build_app, sites).round_trips
        finally:
            restore()
        print(f"round trips per build + synth of the example app: {total}")
        for site, count in sites.most_common(args.profile):
            print(f"  {count:4d}  {site}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        statements_path = Path(tmp) / STATEMENTS_FILE
        statements_path.write_text(json.dumps(statements))
        ours_p: list[float] = []
        bare_p: list[float] = []
        for _ in range(args.process_runs):
            ours_p.append(_process_time("example", statements_path))
            bare_p.append(_process_time("bare", statements_path))
    _time(example.build_app)  # warm-up: the first jsii calls load modules
    _time(lambda app: build_bare(app, statements))
    ours: list[Sample] = []
    bare: list[Sample] = []
    for _ in range(args.runs):
        ours.append(_measure(example.build_app))
        bare.append(_measure(lambda app: build_bare(app, statements)))
    if args.process_runs:
        _report("process (start, import, build, synth)", ours_p, bare_p)
    _report("in-process (build + synth only)", [s.wall for s in ours], [s.wall for s in bare])
    _report(
        "in-process CPU (this process + jsii's node kernel)",
        [s.cpu for s in ours],
        [s.cpu for s in bare],
    )
    trips_ours, trips_bare = ours[-1].round_trips, bare[-1].round_trips
    print(
        f"round trips to the jsii kernel per build + synth: example app {trips_ours}, "
        f"bare {trips_bare} ({(trips_ours / trips_bare - 1) * 100:+.1f}%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
