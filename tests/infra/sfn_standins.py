"""Stand-ins for exactly the SageMaker pieces moto's Step Functions interpreter lacks.

moto (pinned in requirements.txt, ``MOTO_VERSION``) runs a state machine's real definition:
JSONPath, intrinsics, Choice, Wait, Map, Retry and Catch come from its interpreter (derived from
LocalStack's). What it does not have, and what this module adds while :func:`sagemaker_standin`
is active:

- the optimized ``arn:aws:states:::sagemaker:*`` integration: moto forwards it to boto only for
  ``.waitForTaskToken``, and stops a ``createTrainingJob.sync`` task with an error
  (``test_unpatched_moto_stops_at_sync`` keeps that visible). The stand-in forwards the call and,
  for ``.sync``, polls DescribeTrainingJob until the job ends, as the Glue ``.sync`` of the same
  interpreter does. A failed job fails the task with ``States.TaskFailed`` and the describe
  output as the cause (how Step Functions reports a failed ``.sync`` job; from the Step
  Functions developer guide, not verified in an account). Service errors are named as the
  optimized integration names them: ``SageMaker.AmazonSageMakerException`` (the SDK's generic
  exception), ``SageMaker.ResourceLimitExceededException`` for the modeled limit error;
- aws-sdk error names: moto names an unmodeled botocore error after the Python class
  (``sagemaker.sagemakerException``); Step Functions names it ``SageMaker.<Code>`` plus an
  ``Exception`` suffix (https://docs.aws.amazon.com/step-functions/latest/dg/supported-services-awssdk.html);
- SageMaker's timing: moto's jobs complete and its endpoints are InService at once, and it has
  no UpdateEndpoint. The stand-in keeps a job InProgress for ``training_polls`` describes, an
  endpoint Creating/Updating for ``endpoint_polls`` describes and Deleting for
  ``delete_polls``; an update ends InService with the new config, Failed, or RollingBack and
  then InService with the old config. UpdateEndpoint of a busy endpoint and a second Create*
  of an existing name fail with SageMaker's messages ("Cannot update in-progress endpoint",
  "Cannot create already existing ..."); ``Scenario.busy_before`` makes the endpoint busy
  (SageMaker's own update, or another deployment's) just as a given update arrives;
- final metrics on demand: ``Scenario.final_metrics = {"validation:accuracy": 0.93}`` is the
  completed job's ``FinalMetricDataList`` (moto's jobs report only ``train:progress``);
- throttling on demand: ``Scenario.throttle = {"DescribeEndpoint": 2}`` throttles the next two
  DescribeEndpoint calls (``ThrottlingException``, "Rate exceeded");
- the requests as sent: moto keeps only some CreateEndpointConfig members (it drops
  ``ShadowProductionVariants``); ``Scenario.endpoint_config_requests`` has each request whole,
  ``Scenario.updates`` each UpdateEndpoint's config name (the order the endpoint saw), and
  ``Scenario.deleted_configs`` each DeleteEndpointConfig's; ``Scenario.outcome_of`` sets the
  outcome of the update to one config.

:func:`task_failure_cause` (Step Functions, not SageMaker): moto's SendTaskFailure handler drops
the cause; it passes it on.

Not modelled: IAM (no call is denied), S3 (channels and artifacts are not read), instance
capacity, timing (describes count instead of minutes), CloudWatch events of ``.sync``.
"""

from __future__ import annotations

import contextlib
import datetime
import fnmatch
import json
import threading
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import moto
from botocore.exceptions import ClientError
from moto.sagemaker import models as sm_models
from moto.sagemaker import responses as sm_responses
from moto.sagemaker.exceptions import SagemakerClientError, ValidationError
from moto.stepfunctions.parser.api import HistoryEventType, TaskFailedEventDetails
from moto.stepfunctions.parser.asl.component.common.error_name.custom_error_name import (
    CustomErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.failure_event import (
    FailureEvent,
    FailureEventException,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name import (
    StatesErrorName,
)
from moto.stepfunctions.parser.asl.component.common.error_name.states_error_name_type import (
    StatesErrorNameType,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task import state_task_factory
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_aws_sdk as aws_sdk,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service import (
    state_task_service_callback as callback,
)
from moto.stepfunctions.parser.asl.component.state.exec.state_task.service.resource import (
    ResourceCondition,
)
from moto.stepfunctions.parser.asl.eval.event.event_detail import EventDetails
from moto.stepfunctions.parser.asl.utils.boto_client import boto_client_for

# moto warns that these error codes are not in SageMaker's model; Step Functions only needs the
# code (ThrottlingException and AccessDeniedException are common errors, not modeled ones).
warnings.filterwarnings("ignore", message=".*does not match an error shape", category=UserWarning)

MOTO_VERSION = "5.2.5"
assert moto.__version__ == MOTO_VERSION, (
    f"moto {moto.__version__}: the stand-ins were written against {MOTO_VERSION}; check that "
    "they are still needed (test_unpatched_moto_stops_at_sync) and update requirements.txt"
)

_BUSY = ("Creating", "Updating", "SystemUpdating", "RollingBack", "Deleting")
_MODELED = {"ResourceLimitExceeded", "ResourceInUse", "ResourceNotFound", "ConflictException"}


class ThrottlingError(SagemakerClientError):
    code = "ThrottlingException"


class AccessDeniedError(SagemakerClientError):
    code = "AccessDeniedException"


@dataclass
class Scenario:
    """How the stand-in SageMaker behaves; tests change it between or during executions."""

    training_polls: int = 1
    training_failure: str | None = None
    """A FailureReason: the job ends Failed with it."""
    final_metrics: dict[str, float] | None = None
    """The completed job's ``FinalMetricDataList`` (name -> final value), as SageMaker fills it
    from the job's MetricDefinitions; moto's jobs report only ``train:progress``."""
    endpoint_polls: int = 1
    delete_polls: int = 1
    update_outcome: str = "InService"
    """``InService``, ``Failed`` or ``RolledBack`` for the next create/update."""
    failure_reason: str = (
        "The primary container for production variant AllTraffic did not pass the ping "
        "health check."
    )
    throttle: dict[str, int] = field(default_factory=dict)
    """API name -> how many of its next calls are throttled."""
    fail_after_create: set[str] = field(default_factory=set)
    """Create* API names whose next call creates the resource, then answers a 500 (as if the
    reply were lost), so the retry meets the existing resource."""
    deny: set[str] = field(default_factory=set)
    """API names whose next call is denied (AccessDeniedException)."""
    calls: list[str] = field(default_factory=list)
    """Every SageMaker API called, in order."""
    endpoint_config_requests: list[dict[str, Any]] = field(default_factory=list)
    """Each CreateEndpointConfig request as the client sent it."""
    updates: list[str] = field(default_factory=list)
    """Each UpdateEndpoint's ``EndpointConfigName``, in order."""
    deleted_configs: list[str] = field(default_factory=list)
    """Each DeleteEndpointConfig's name, in order (the versions' clean-up's too)."""
    outcome_of: dict[str, str] = field(default_factory=dict)
    """Config name -> the outcome of the next update to it (instead of ``update_outcome``)."""
    replaced_after: dict[str, str] = field(default_factory=dict)
    """Config name pattern (``fnmatch``) -> another config: once an update to a matching
    config is in service, the next describe finds the endpoint InService with the other one
    (another deployment replaced it meanwhile); the first such update only."""
    busy_before: dict[str, str | None] = field(default_factory=dict)
    """Config name pattern (``fnmatch``) -> what makes the endpoint busy just as an
    UpdateEndpoint to a matching config arrives (the first such call only): ``None``,
    SageMaker's own update (SystemUpdating, the config unchanged after); a config name, another
    deployment's update to it (Updating, then InService with that config). Either lasts
    ``endpoint_polls`` describes, and the call is refused as in-progress, as SageMaker refuses
    an update of a busy endpoint."""
    deployment_configs: list[Any] = field(default_factory=list)
    """Each UpdateEndpoint's ``DeploymentConfig`` (None without one); not acted on: the update
    ends as ``update_outcome`` says (``RolledBack`` is what an alarm during the bake gives)."""


@dataclass
class _Pending:
    polls: int
    outcome: str
    new_config: str
    old_config: str | None


class _FakeSageMaker:
    """The state kept beside moto's backend: pending endpoint transitions and job polls."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.lock = threading.RLock()
        self.pending: dict[str, _Pending] = {}
        self.deleting: dict[str, int] = {}
        self.job_polls: dict[str, int] = {}

    def call(self, api: str) -> None:
        with self.lock:
            self.scenario.calls.append(api)
            if api in self.scenario.deny:
                self.scenario.deny.discard(api)
                raise AccessDeniedError(f"User is not authorized to perform: sagemaker:{api}")
            left = self.scenario.throttle.get(api, 0)
            if left:
                self.scenario.throttle[api] = left - 1
                raise ThrottlingError("Rate exceeded")

    def lost_reply(self, api: str) -> bool:
        with self.lock:
            if api in self.scenario.fail_after_create:
                self.scenario.fail_after_create.discard(api)
                return True
            return False


class _LostReply(SagemakerClientError):
    code = "InternalFailure"


def _patch_backend(fake: _FakeSageMaker, stack: contextlib.ExitStack) -> None:
    backend = sm_models.SageMakerModelBackend
    original: dict[str, Callable[..., Any]] = {
        name: getattr(backend, name)
        for name in (
            "create_training_job",
            "describe_training_job",
            "create_model",
            "delete_model",
            "create_endpoint_config",
            "describe_endpoint_config",
            "delete_endpoint_config",
            "list_endpoint_configs",
            "create_endpoint",
            "describe_endpoint",
            "delete_endpoint",
        )
    }

    def api_name(name: str) -> str:
        return "".join(part.capitalize() for part in name.split("_"))

    def exists_error(kind: str, arn: str) -> ValidationError:
        return ValidationError(message=f'Cannot create already existing {kind} "{arn}".')

    def create_training_job(self: Any, training_job_name: str, **kw: Any) -> Any:
        fake.call("CreateTrainingJob")
        if training_job_name in self.training_jobs:
            raise exists_error("training job", self.training_jobs[training_job_name].arn)
        job = original["create_training_job"](self, training_job_name=training_job_name, **kw)
        fake.job_polls[training_job_name] = fake.scenario.training_polls
        return job

    def describe_training_job(self: Any, training_job_name: str) -> dict[str, Any]:
        fake.call("DescribeTrainingJob")
        response = dict(original["describe_training_job"](self, training_job_name))
        with fake.lock:
            left = fake.job_polls.get(training_job_name, 0)
            if left:
                fake.job_polls[training_job_name] = left - 1
                response["TrainingJobStatus"] = "InProgress"
                response["SecondaryStatus"] = "Training"
            elif fake.scenario.training_failure:
                response["TrainingJobStatus"] = "Failed"
                response["SecondaryStatus"] = "Failed"
                response["FailureReason"] = fake.scenario.training_failure
                response.pop("ModelArtifacts", None)
            elif fake.scenario.final_metrics is not None:
                now = datetime.datetime.now(datetime.UTC)
                response["FinalMetricDataList"] = [
                    {"MetricName": name, "Value": value, "Timestamp": now}
                    for name, value in fake.scenario.final_metrics.items()
                ]
        return response

    def create_model(self: Any, model_name: str, **kw: Any) -> Any:
        fake.call("CreateModel")
        if model_name in self._models:
            raise exists_error("model", self._models[model_name].arn)
        model = original["create_model"](self, model_name=model_name, **kw)
        if fake.lost_reply("CreateModel"):
            raise _LostReply("We encountered an internal error. Please try again.")
        return model

    def create_endpoint_config(self: Any, endpoint_config_name: str, **kw: Any) -> Any:
        fake.call("CreateEndpointConfig")
        if endpoint_config_name in self.endpoint_configs:
            raise exists_error(
                "endpoint configuration", self.endpoint_configs[endpoint_config_name].arn
            )
        config = original["create_endpoint_config"](
            self, endpoint_config_name=endpoint_config_name, **kw
        )
        if fake.lost_reply("CreateEndpointConfig"):
            raise _LostReply("We encountered an internal error. Please try again.")
        return config

    def create_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str, tags: Any) -> Any:
        fake.call("CreateEndpoint")
        if endpoint_name in self.endpoints:
            raise exists_error("endpoint", self.endpoints[endpoint_name].arn)
        endpoint = original["create_endpoint"](self, endpoint_name, endpoint_config_name, tags)
        with fake.lock:
            endpoint.endpoint_status = "Creating"
            fake.pending[endpoint_name] = _Pending(
                fake.scenario.endpoint_polls,
                "Failed"
                if fake.scenario.update_outcome == "RolledBack"
                else fake.scenario.update_outcome,
                endpoint_config_name,
                None,
            )
        return endpoint

    def update_endpoint(self: Any, endpoint_name: str, endpoint_config_name: str) -> str:
        fake.call("UpdateEndpoint")
        if endpoint_name not in self.endpoints:
            original["describe_endpoint"](self, endpoint_name)  # raises "Could not find endpoint"
        endpoint = self.endpoints[endpoint_name]
        if endpoint_config_name not in self.endpoint_configs:
            raise ValidationError(
                message=f"Could not find endpoint configuration '{endpoint_config_name}'."
            )
        with fake.lock:
            busy = [
                p for p in fake.scenario.busy_before if fnmatch.fnmatchcase(endpoint_config_name, p)
            ]
            if busy:
                _start_concurrent_update(endpoint, fake, fake.scenario.busy_before.pop(busy[0]))
            if endpoint.endpoint_status in _BUSY:
                raise ValidationError(
                    message=f'Cannot update in-progress endpoint "{endpoint.arn}".'
                )
            if endpoint.endpoint_status == "Failed":
                raise ValidationError(message=f'Cannot update failed endpoint "{endpoint.arn}".')
            endpoint.endpoint_status = "Updating"
            fake.pending[endpoint_name] = _Pending(
                fake.scenario.endpoint_polls,
                fake.scenario.outcome_of.pop(endpoint_config_name, fake.scenario.update_outcome),
                endpoint_config_name,
                endpoint.endpoint_config_name,
            )
        return str(endpoint.arn)

    def describe_endpoint(self: Any, endpoint_name: str) -> dict[str, Any]:
        fake.call("DescribeEndpoint")
        with fake.lock:
            if endpoint_name in fake.deleting:
                fake.deleting[endpoint_name] -= 1
                if fake.deleting[endpoint_name] < 0:
                    del fake.deleting[endpoint_name]
                    original["delete_endpoint"](self, endpoint_name)
            endpoint = self.endpoints.get(endpoint_name)
            pending = fake.pending.get(endpoint_name)
            if endpoint is not None and pending is not None:
                pending.polls -= 1
                if pending.polls < 0:
                    _settle(endpoint, pending, fake)
        return dict(original["describe_endpoint"](self, endpoint_name))

    def delete_endpoint(self: Any, endpoint_name: str) -> None:
        fake.call("DeleteEndpoint")
        endpoint = self.endpoints.get(endpoint_name)
        if endpoint is None:
            original["delete_endpoint"](self, endpoint_name)  # raises "Could not find endpoint"
        with fake.lock:
            fake.pending.pop(endpoint_name, None)
            endpoint.endpoint_status = "Deleting"
            fake.deleting[endpoint_name] = fake.scenario.delete_polls

    def delete_endpoint_config(self: Any, endpoint_config_name: str) -> None:
        fake.call("DeleteEndpointConfig")
        fake.scenario.deleted_configs.append(endpoint_config_name)
        original["delete_endpoint_config"](self, endpoint_config_name)

    def passthrough(name: str) -> Callable[..., Any]:
        def call(self: Any, *args: Any, **kw: Any) -> Any:
            fake.call(api_name(name))
            return original[name](self, *args, **kw)

        return call

    replacements = {
        "create_training_job": create_training_job,
        "describe_training_job": describe_training_job,
        "create_model": create_model,
        "delete_model": passthrough("delete_model"),
        "create_endpoint_config": create_endpoint_config,
        "describe_endpoint_config": passthrough("describe_endpoint_config"),
        "delete_endpoint_config": delete_endpoint_config,
        "list_endpoint_configs": passthrough("list_endpoint_configs"),
        "create_endpoint": create_endpoint,
        "describe_endpoint": describe_endpoint,
        "delete_endpoint": delete_endpoint,
    }
    for name, replacement in replacements.items():
        stack.enter_context(_patched(backend, name, replacement))
    stack.enter_context(_patched(backend, "update_endpoint", update_endpoint))

    def update_endpoint_response(self: Any) -> Any:
        fake.scenario.deployment_configs.append(self._get_param("DeploymentConfig"))
        fake.scenario.updates.append(self._get_param("EndpointConfigName"))
        arn = self.sagemaker_backend.update_endpoint(
            self._get_param("EndpointName"), self._get_param("EndpointConfigName")
        )
        return sm_responses.ActionResult({"EndpointArn": arn})

    stack.enter_context(
        _patched(sm_responses.SageMakerResponse, "update_endpoint", update_endpoint_response)
    )
    create_config_response = sm_responses.SageMakerResponse.create_endpoint_config

    def record_config_request(self: Any) -> Any:
        fake.scenario.endpoint_config_requests.append(json.loads(self.body))
        return create_config_response(self)

    stack.enter_context(
        _patched(sm_responses.SageMakerResponse, "create_endpoint_config", record_config_request)
    )


def _start_concurrent_update(endpoint: Any, fake: _FakeSageMaker, config: str | None) -> None:
    """Someone else's update of the endpoint starts (see ``Scenario.busy_before``)."""
    current = endpoint.endpoint_config_name
    endpoint.endpoint_status = "SystemUpdating" if config is None else "Updating"
    fake.pending[endpoint.endpoint_name] = _Pending(
        fake.scenario.endpoint_polls, "InService", config or current, current
    )


def _settle(endpoint: Any, pending: _Pending, fake: _FakeSageMaker) -> None:
    """The end of a create/update: InService with the new config, Failed, or rolled back."""
    now = datetime.datetime.now(datetime.UTC)
    endpoint.last_modified_time = now
    if pending.outcome == "InService":
        endpoint.endpoint_status = "InService"
        endpoint.endpoint_config_name = pending.new_config
        endpoint.failure_reason = None
        del fake.pending[endpoint.endpoint_name]
        replaced = [
            p for p in fake.scenario.replaced_after if fnmatch.fnmatchcase(pending.new_config, p)
        ]
        if replaced:  # settles at the next describe, InService until then
            fake.pending[endpoint.endpoint_name] = _Pending(
                0, "InService", fake.scenario.replaced_after.pop(replaced[0]), pending.new_config
            )
    elif pending.outcome == "Failed":
        endpoint.endpoint_status = "Failed"
        endpoint.failure_reason = fake.scenario.failure_reason
        del fake.pending[endpoint.endpoint_name]
    elif pending.outcome == "RolledBack":
        endpoint.endpoint_status = "RollingBack"
        endpoint.failure_reason = fake.scenario.failure_reason
        pending.outcome = "RolledBackDone"
        pending.polls = fake.scenario.endpoint_polls
    else:  # the rollback finished: in service with the previous config
        endpoint.endpoint_status = "InService"
        endpoint.endpoint_config_name = pending.old_config
        del fake.pending[endpoint.endpoint_name]


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any) -> Iterator[None]:
    missing = object()
    before = owner.__dict__.get(name, missing)
    setattr(owner, name, value)
    try:
        yield
    finally:
        if before is missing:
            delattr(owner, name)
        else:
            setattr(owner, name, before)


def _jsonable(value: Any) -> Any:
    """DescribeTrainingJob as Step Functions returns it: timestamps as epoch numbers."""
    return json.loads(
        json.dumps(
            value,
            default=lambda v: v.timestamp() if isinstance(v, datetime.datetime) else str(v),
        )
    )


class _SageMakerIntegration(callback.StateTaskServiceCallback):  # type: ignore[misc]
    """``arn:aws:states:::sagemaker:<api>[.sync]``: forwards the call; ``.sync`` polls the job."""

    def __init__(self) -> None:
        # WaitForTaskToken too: the interpreter's .sync loop needs the task's callback endpoint.
        super().__init__(
            supported_integration_patterns={
                ResourceCondition.Sync,
                ResourceCondition.WaitForTaskToken,
            }
        )

    def _validate_service_integration_is_supported(self) -> None:
        pass  # every SageMaker API is forwarded to moto's SageMaker

    def _client(self, resource_runtime_part: Any, state_credentials: Any) -> Any:
        return boto_client_for(
            service="sagemaker",
            region=resource_runtime_part.region,
            state_credentials=state_credentials,
        )

    def _eval_service_task(
        self,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> None:
        client = self._client(resource_runtime_part, state_credentials)
        response = getattr(client, self._get_boto_service_action())(**normalised_parameters)
        response.pop("ResponseMetadata", None)
        env.stack.append(_jsonable(response))

    def _build_sync_resolver(
        self,
        env: Any,
        resource_runtime_part: Any,
        normalised_parameters: dict[str, Any],
        state_credentials: Any,
    ) -> Callable[[], Any]:
        assert self._get_boto_service_action() == "create_training_job", "only training .sync"
        env.stack.pop()
        name = normalised_parameters["TrainingJobName"]
        client = self._client(resource_runtime_part, state_credentials)

        def resolve() -> Any:
            described = client.describe_training_job(TrainingJobName=name)
            described.pop("ResponseMetadata", None)
            status = described["TrainingJobStatus"]
            if status in ("InProgress", "Stopping"):
                return None
            if status == "Completed":
                return _jsonable(described)
            raise FailureEventException(
                FailureEvent(
                    env=env,
                    error_name=StatesErrorName(typ=StatesErrorNameType.StatesTaskFailed),
                    event_type=HistoryEventType.TaskFailed,
                    event_details=EventDetails(
                        taskFailedEventDetails=TaskFailedEventDetails(
                            resource=self._get_sfn_resource(),
                            resourceType=self._get_sfn_resource_type(),
                            error=StatesErrorNameType.StatesTaskFailed.to_name(),
                            cause=json.dumps(_jsonable(described)),
                        )
                    ),
                )
            )

        return resolve

    def _from_error(self, env: Any, ex: Exception) -> FailureEvent:
        if isinstance(ex, ClientError):
            code = ex.response["Error"]["Code"]
            error = (
                f"SageMaker.{code}Exception"
                if code in _MODELED
                else "SageMaker.AmazonSageMakerException"
            )
            cause = (
                f"{ex.response['Error']['Message']} (Service: AmazonSageMaker; Status Code: "
                f"{ex.response['ResponseMetadata']['HTTPStatusCode']}; Error Code: {code})"
            )
            return FailureEvent(
                env=env,
                error_name=CustomErrorName(error),
                event_type=HistoryEventType.TaskFailed,
                event_details=EventDetails(
                    taskFailedEventDetails=TaskFailedEventDetails(
                        error=error,
                        cause=cause,
                        resource=self._get_sfn_resource(),
                        resourceType=self._get_sfn_resource_type(),
                    )
                ),
            )
        return super()._from_error(env=env, ex=ex)


def _aws_sdk_error_name(norm_service_name: str, ex: Exception) -> str:
    """``SageMaker.<Code>Exception``, as Step Functions names aws-sdk errors."""
    if isinstance(ex, ClientError):
        code = ex.response["Error"]["Code"]
        return f"{norm_service_name}.{code}" + ("" if code.endswith("Exception") else "Exception")
    name = f"{norm_service_name}.{ex.__class__.__name__}"
    return name if name.endswith("Exception") else name + "Exception"


@contextlib.contextmanager
def sagemaker_standin(scenario: Scenario | None = None) -> Iterator[Scenario]:
    """Activate the stand-ins (inside ``mock_aws``); yields the scenario to steer them."""
    scenario = scenario or Scenario()
    fake = _FakeSageMaker(scenario)
    original_factory = state_task_factory.state_task_service_for

    def factory(service_name: str) -> Any:
        if service_name == "sagemaker":
            return _SageMakerIntegration()
        return original_factory(service_name=service_name)

    with contextlib.ExitStack() as stack:
        _patch_backend(fake, stack)
        stack.enter_context(_patched(state_task_factory, "state_task_service_for", factory))
        # Step Functions' "applicationautoscaling" is botocore's "application-autoscaling".
        overrides = aws_sdk.StateTaskServiceAwsSdk._SERVICE_NAME_SFN_TO_BOTO_OVERRIDES
        stack.enter_context(
            _patched(
                aws_sdk.StateTaskServiceAwsSdk,
                "_SERVICE_NAME_SFN_TO_BOTO_OVERRIDES",
                {**overrides, "applicationautoscaling": "application-autoscaling"},
            )
        )
        stack.enter_context(
            _patched(
                aws_sdk,
                "_SERVICE_ERROR_NAMES",
                {
                    **aws_sdk._SERVICE_ERROR_NAMES,
                    "sagemaker": "SageMaker",
                    "applicationautoscaling": "ApplicationAutoScaling",
                },
            )
        )
        stack.enter_context(
            _patched(
                aws_sdk.StateTaskServiceAwsSdk,
                "_normalise_exception_name",
                staticmethod(_aws_sdk_error_name),
            )
        )
        sdk_eval = aws_sdk.StateTaskServiceAwsSdk._eval_service_task

        def sdk_eval_jsonable(self: Any, env: Any, *args: Any, **kwargs: Any) -> None:
            sdk_eval(self, env, *args, **kwargs)
            env.stack.append(_jsonable(env.stack.pop()))

        stack.enter_context(
            _patched(aws_sdk.StateTaskServiceAwsSdk, "_eval_service_task", sdk_eval_jsonable)
        )
        # The interpreter polls a .sync task every 0.5 s; the stand-in's jobs end by count.
        stack.enter_context(_patched(callback, "_DELAY_SECONDS_SYNC_CONDITION_CHECK", 0.01))
        yield scenario


@contextlib.contextmanager
def task_failure_cause() -> Iterator[None]:
    """moto 5.2.5's SendTaskFailure handler drops the request's ``cause`` (it passes only
    ``error`` to the interpreter, whose backend accepts both); this passes it on, as Step
    Functions does (the cause is the failed task's, and a Fail state's ``CausePath`` reads it)."""
    from moto.stepfunctions import responses as sfn_responses

    def send_task_failure(self: Any) -> Any:
        self.stepfunction_backend.send_task_failure(
            self._get_param("taskToken"),
            error=self._get_param("error"),
            cause=self._get_param("cause"),
        )
        return sfn_responses.EmptyResult()

    with _patched(sfn_responses.StepFunctionResponse, "send_task_failure", send_task_failure):
        yield
