"""Training through Step Functions: check the input -> train (.sync) -> model -> endpoint config
-> create, update or recover the endpoint -> wait until InService -> delete old versions.

Execution input (all optional)::

    {"TrainingJobName": "<base_job_name>--...",         # default: <base_job_name>--<uuid>
     "Hyperparameters": {"epochs": "20"},                # JSON-encoded strings, merged per key
     "Channels": {"train": "s3://bucket/other/prefix"}}  # declared channels only

A job name outside ``<base_job_name>--`` or a channel the estimator does not declare fails the
execution before anything is created (``InvalidExecutionInput``). The model and the endpoint
config take the training job's name, so every execution creates fresh ones; the endpoint keeps
its name. The endpoint lifecycle (docs/contract.md §5):

- not found (DescribeEndpoint's ``Could not find endpoint``; every other lookup error fails the
  execution with its own error) -> CreateEndpoint;
- InService / OutOfService / UpdateRollbackFailed -> UpdateEndpoint (with ``shadow=``: first
  the new model as a shadow variant, a bake and an alarm check; :mod:`.shadow` also says how
  its updates meet a busy endpoint);
- Creating / Updating / SystemUpdating / RollingBack (another execution's deployment) -> wait,
  look again; an UpdateEndpoint that meets such an endpoint anyway ("in-progress") does the same;
- Failed (accepts only DeleteEndpoint) -> DeleteEndpoint, wait until it is gone, create;
- then poll until InService with this execution's config; RollingBack is waited on; a rollback
  (InService with another config) or Failed fails the execution with SageMaker's FailureReason.

The states are ``CustomState`` JSON, not aws-cdk-lib's ``SageMakerCreateTrainingJob`` & co.:
that task has no spot (``EnableManagedSpotTraining``, ``MaxWaitTimeInSeconds``), checkpoint or
``extra_request_fields`` support, and the deployment steps use aws-sdk integrations for their
precise error names. :meth:`TrainingPipelineFragment.grant_run` grants what aws-cdk-lib's tasks
grant for the same calls (AddTags and ListTags included, aws-cdk #32294 / PR #32536).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jsii
from aws_cdk import (
    ArnFormat,
    Duration,
    IResolvable,
    IStableAnyProducer,
    Lazy,
    RemovalPolicies,
    RemovalPolicy,
    TagManager,
)
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_stepfunctions as sfn
from aws_cdk import custom_resources as cr
from constructs import Construct

from . import _approval, _hosting, _iam, _metadata, _shadow_states, _states
from ._approval import Approval
from ._validation import is_unresolved, require, stack_of
from .endpoint import AsyncInference, ServerlessConfig
from .estimator import ChainerEstimator
from .guardrails import DeploymentGuardrails
from .instance import has_instance_storage, normalize_instance_type
from .model import ISOLATED_MODEL_CODE_DIR, model_environment
from .model_data import _acknowledge_lookup_function
from .quality_gate import QualityGate, gate_states
from .registry import ModelRegistry, package_request
from .shadow import SHADOW_VARIANT, ShadowDeployment

__all__ = ["InvocationScaling", "TrainingPipelineFragment"]

_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_SDK = "aws-sdk:sagemaker"


@jsii.implements(IStableAnyProducer)
class _Producer:
    """A value computed when the template is first resolved (after aspects such as
    ``Tags.of``), for ``Lazy.any``, which keeps it."""

    def __init__(self, produce: Callable[[], Any]) -> None:
        self._produce = produce

    def produce(self) -> Any:
        return self._produce()


@dataclass(frozen=True)
class InvocationScaling:
    """Target-tracking auto scaling of the pipeline's endpoint on invocations per instance.

    The pipeline registers it after each deployment (the endpoint must exist first, so it
    cannot be a stack resource) and deregisters it before each update (an update that changes
    the instance type of a scaled variant fails).
    """

    max_capacity: int
    invocations_per_instance: int
    min_capacity: int = 1


class TrainingPipelineFragment(sfn.StateMachineFragment):
    """The pipeline's states, to embed in a state machine of your own.

    Call :meth:`grant_run` with your state machine's role: the states are plain service
    integrations and carry no policies. Every task is an attribute (``train_task``, ...) for
    ``add_retry``/``add_catch``; the default retriers come first.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        estimator: ChainerEstimator,
        deploy: bool = True,
        endpoint_name: str | None = None,
        endpoint_instance_type: str = "ml.m5.large",
        endpoint_instance_count: int = 1,
        endpoint_kms_key: kms.IKey | None = None,
        encrypt_endpoint_storage: bool = True,
        model_server_workers: int | None = None,
        model_environment_variables: dict[str, str] | None = None,
        poll_interval: Duration | None = None,
        isolate_model: bool = False,
        keep_versions: int | None = 2,
        endpoint_removal_policy: RemovalPolicy = RemovalPolicy.RETAIN,
        retry_interval: Duration | None = None,
        retry_backoff_rate: float = 2.0,
        resource_limit_wait: Duration | None = None,
        autoscaling: InvocationScaling | None = None,
        quality_gate: QualityGate | None = None,
        approval: Approval | None = None,
        registry: ModelRegistry | None = None,
        guardrails: DeploymentGuardrails | None = None,
        serverless: ServerlessConfig | None = None,
        async_inference: AsyncInference | None = None,
        shadow: ShadowDeployment | None = None,
    ) -> None:
        """Define the states.

        :param estimator: what to train.
        :param deploy: False stops after training; left out, the model is deployed.
        :param endpoint_name: the endpoint created, then updated by each execution; left out,
            the estimator's ``base_job_name``.
        :param endpoint_instance_type: left out, ``ml.m5.large`` (selects the image variant).
        :param endpoint_instance_count: left out, 1.
        :param endpoint_kms_key: encrypts the endpoint's storage; left out, a key is created.
        :param encrypt_endpoint_storage: False leaves ``KmsKeyId`` out (instance types with
            local NVMe storage); left out, True.
        :param model_server_workers: ``SAGEMAKER_MODEL_SERVER_WORKERS``; left out, one per CPU.
        :param model_environment_variables: extra model container variables; left out, none.
        :param poll_interval: between DescribeEndpoint calls (and before looking at a busy
            endpoint again); left out, 30 seconds. Tests use 0.
        :param isolate_model: run the model without network access. An isolated container
            cannot download its code, so it reads ``/opt/ml/model/code``: the training script
            must copy its code to ``$SM_MODEL_DIR/code``. Left out, False (the model downloads
            the code from S3), also when the training job itself was isolated.
        :param keep_versions: after the endpoint is InService, delete the endpoint configs (and
            their models) of this pipeline but the newest ``keep_versions`` (the one in service
            included, so the previous one stays for a manual rollback). None keeps everything.
            Left out, 2.
        :param endpoint_removal_policy: what ``cdk destroy`` does to the endpoint the pipeline
            deploys (and the serving role it runs under). ``DESTROY`` adds a finalizer (a custom
            resource) that deletes the endpoint when the stack is deleted. Left out, ``RETAIN``:
            the endpoint keeps serving (and billing) and keeps its role, so it does not break.
        :param retry_interval: first wait of the default retriers; left out, 2 seconds.
        :param retry_backoff_rate: growth of that wait; left out, 2.
        :param resource_limit_wait: first wait after ``ResourceLimitExceeded`` on
            CreateTrainingJob (5 attempts, doubling: about 31 times this in all); left out,
            1 minute. Then the execution fails with SageMaker's message.
        :param autoscaling: scale the endpoint on invocations per instance (registered by each
            execution once the endpoint is InService); left out, a fixed instance count.
        :param quality_gate: thresholds on the training job's final metrics
            (:class:`~chainer_sagemaker_cdk.quality_gate.QualityGate`); a model that misses one
            ends the execution in ``ModelRejected`` before anything is deployed. Left out, every
            trained model is deployed.
        :param approval: wait for a person's approval (an SNS message with the task token) after
            the gate; left out, no approval.
        :param registry: register each accepted model as a version of a model package group
            (created in the stack) and deploy from that version; left out, no registry.
        :param guardrails: blue/green traffic shifting with automatic rollback on alarms for
            each UpdateEndpoint (:class:`~chainer_sagemaker_cdk.guardrails.DeploymentGuardrails`);
            left out, SageMaker's default update.
        :param serverless: run the endpoint on serverless capacity
            (:class:`~chainer_sagemaker_cdk.endpoint.ServerlessConfig`: memory, concurrency);
            ``endpoint_instance_type`` then only picks the (CPU) image; no VPC, no network
            isolation. Left out, instances.
        :param async_inference: asynchronous inference, requests and responses in S3
            (:class:`~chainer_sagemaker_cdk.endpoint.AsyncInference`); the serving role may
            read the requests, write the responses and failures and publish to the topics.
            Left out, real-time.
        :param shadow: deploy each new model as a shadow variant next to production first and
            promote it after a bake with quiet alarms
            (:class:`~chainer_sagemaker_cdk.shadow.ShadowDeployment`); left out, each model
            goes straight to production.
        """
        super().__init__(scope, id)
        self.estimator = estimator
        self.deploy = deploy
        self._stack = stack_of(self)
        self._partition = self._stack.partition
        self._region_account: tuple[str, str] | None = None
        self.endpoint_name = endpoint_name or estimator.base_job_name
        require(
            is_unresolved(self.endpoint_name) or bool(_ENDPOINT_NAME.match(self.endpoint_name)),
            "endpoint_name",
            self.endpoint_name,
            "use at most 63 letters, digits and hyphens",
        )
        self.endpoint_instance_type = normalize_instance_type(
            endpoint_instance_type, "endpoint_instance_type"
        )
        require(
            is_unresolved(endpoint_instance_count) or endpoint_instance_count >= 1,
            "endpoint_instance_count",
            endpoint_instance_count,
            "use 1 or more",
        )
        require(
            keep_versions is None or keep_versions >= 1,
            "keep_versions",
            keep_versions,
            "use 1 or more (the version in service counts), or None to keep every version",
        )
        self.keep_versions = keep_versions
        if deploy:
            _hosting.check(
                serverless=serverless,
                async_inference=async_inference,
                instance_type=self.endpoint_instance_type,
                instance_count=endpoint_instance_count,
                vpc=estimator.network.vpc,
                isolate_model=isolate_model,
                autoscaling=autoscaling,
                shadow=shadow,
            )
            require(
                shadow is None or autoscaling is None,
                "shadow",
                "given",
                "a shadow deployment does not suspend autoscaling yet: leave autoscaling out, "
                "or shadow out",
            )
        self.serverless = serverless
        self.async_inference = async_inference
        self.shadow = shadow
        if shadow is not None:
            shadow.validate()
        self.endpoint_kms_key: kms.IKey | None = None
        # Serverless: KmsKeyId is optional and encrypts the model's image SageMaker keeps
        # (https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-create-config.html).
        if deploy and encrypt_endpoint_storage:
            require(
                serverless is not None or not has_instance_storage(self.endpoint_instance_type),
                "encrypt_endpoint_storage",
                True,
                f"{self.endpoint_instance_type} has local NVMe storage, which rejects "
                "KmsKeyId: set encrypt_endpoint_storage=False",
            )
            self.endpoint_kms_key = endpoint_kms_key or kms.Key(
                self,
                "EndpointStorageKey",
                enable_key_rotation=True,
                description="SageMaker endpoint storage volumes",
            )
        self._poll = poll_interval or Duration.seconds(30)
        self._retry_interval = retry_interval or Duration.seconds(2)
        self._backoff = retry_backoff_rate
        self._limit_wait = resource_limit_wait or Duration.minutes(1)
        self.isolate_model = isolate_model
        self.autoscaling = autoscaling
        if autoscaling is not None:
            require(
                1 <= autoscaling.min_capacity <= autoscaling.max_capacity,
                "autoscaling",
                autoscaling,
                "use 1 <= min_capacity <= max_capacity",
            )
            require(
                autoscaling.invocations_per_instance >= 1,
                "autoscaling.invocations_per_instance",
                autoscaling.invocations_per_instance,
                "use 1 or more invocations per minute per instance",
            )
        self.tag_source: TagManager = self._stack.tags
        self._rendered_tags: IResolvable | None = None
        """Whose tags every created job, model, config and endpoint carries (with the
        estimator's ``tags`` over them); :class:`TrainingPipeline` points it at its state
        machine, whose tags include the stack's and ``Tags.of(pipeline)``."""
        self.prefix = estimator.base_job_name
        self.quality_gate = quality_gate
        self.approval = approval
        self.registry = registry
        self.guardrails = guardrails
        self.rollback_alarms: list[cloudwatch.IAlarm] = []
        if guardrails is not None:
            guardrails.validate()
            guardrails.validate_for(
                instance_count=None
                if is_unresolved(endpoint_instance_count)
                else endpoint_instance_count,
                serverless=serverless is not None,
            )
        self.model_package_group_name: str | None = None
        if registry is not None:
            require(
                deploy,
                "registry",
                registry,
                "a registry needs deploy=True (the version "
                "is registered with the serving image for the pipeline's endpoint)",
            )
            self.model_package_group_name = registry.resolve_name(estimator.base_job_name)
        self._compare_serving = quality_gate is not None and quality_gate.compare_with_serving
        if self._compare_serving:
            require(
                registry is not None,
                "quality_gate.compare_with_serving",
                True,
                "give registry=ModelRegistry(): the serving model's metrics are read from its "
                "registry version",
            )
        if quality_gate is not None:
            quality_gate.validate(list(estimator.metric_definitions))
        # The final metrics are kept only when something reads them. A wildcard path: a job
        # that reported no metric gives [] instead of failing the task's ResultSelector.
        metrics = quality_gate is not None or (
            approval is not None and bool(estimator.metric_definitions)
        )
        selector = {
            "TrainingJobName.$": "$.TrainingJobName",
            "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
        }
        if metrics:
            selector["Metrics.$"] = "$.FinalMetricDataList[*]"

        self.prepare_states = self._prepare()
        self.train_task = self._custom(
            "Train",
            "sagemaker:createTrainingJob.sync",
            self._training_parameters(),
            "$.training",
            selector,
        )
        _states.retry_training(
            self.train_task, self._retry_interval, self._backoff, self._limit_wait
        )
        self._catch_training_failure()
        chain = self.prepare_states.next(self.train_task)
        self._end: sfn.INextable = self.train_task
        if quality_gate is not None:
            lookup = self._serving_lookup if self._compare_serving else None
            chain = chain.next(
                gate_states(self, quality_gate, "$.training.Metrics", serving=lookup)
            )
            self._end = chain.end_states[0]  # type: ignore[assignment]
        if approval is not None:
            self.approval_task, approved = _approval.approval_states(
                self, approval, self._partition, "$.training.Metrics" if metrics else None
            )
            chain = chain.next(approved)
            self._end = chain.end_states[0]  # type: ignore[assignment]
        self.serving_role: iam.IRole | None = None
        if deploy:
            self._build_deploy(
                chain,
                endpoint_instance_count,
                model_server_workers,
                model_environment_variables or {},
                endpoint_removal_policy,
            )

    # -- states -------------------------------------------------------------------------------
    def _custom(
        self,
        id: str,
        integration: str,
        parameters: dict[str, Any],
        result_path: str | None,
        selector: dict[str, str] | None = None,
    ) -> sfn.CustomState:
        state: dict[str, Any] = {
            "Type": "Task",
            "Resource": f"arn:{self._partition}:states:::{integration}",
            "Parameters": parameters,
            "ResultPath": result_path,
        }
        if selector:
            state["ResultSelector"] = selector
        return sfn.CustomState(self, id, state_json=state)

    def _sdk(
        self,
        id: str,
        api: str,
        parameters: dict[str, Any],
        result_path: str | None,
        selector: dict[str, str] | None = None,
    ) -> sfn.CustomState:
        task = self._custom(id, f"{_SDK}:{api}", parameters, result_path, selector)
        _states.retry_sdk(task, self._retry_interval, self._backoff)
        return task

    def _tags(self) -> Any:
        """The tags of every create call, resolved at synth (after ``Tags.of`` has run).

        One cached ``Lazy`` for all of them, as CDK's own ``TagManager.rendered_tags``: the
        tags are rendered once per app instead of once per create call and resolution pass
        (each a round trip to jsii's kernel, and a callback into Python)."""
        if self._rendered_tags is None:
            # No tags: [] (a None result would not be kept), which leaves the key out.
            self._rendered_tags = Lazy.any(_Producer(self._render_tags), omit_empty_array=True)
        return self._rendered_tags

    def _render_tags(self) -> list[dict[str, str]]:
        rendered = self.tag_source.render_tags() or []
        tags: dict[str, str] = {}
        for tag in rendered:
            key = tag.get("Key", tag.get("key"))
            value = tag.get("Value", tag.get("value"))
            tags[key] = value
        tags.update(self.estimator.tags)
        return [{"Key": k, "Value": v} for k, v in tags.items()]

    def _prepare(self) -> sfn.Chain:
        est = self.estimator
        defaults = sfn.Pass(
            self,
            "Defaults",
            parameters={
                "defaults": {
                    **_default_job_name(est.base_job_name),
                    "Hyperparameters": dict(est.hyperparameters),
                    "Channels": dict(est.channel_uris),
                },
                # One marker per declared channel, keys sorted: merging the input's channels in
                # and the markers back over them gives the markers again only when the input
                # names no other channel.
                "declared": dict.fromkeys(sorted(est.channel_uris), 0),
                "input.$": "$",
            },
        )
        merge = sfn.Pass(
            self,
            "ApplyInput",
            parameters={
                "merged.$": "States.JsonMerge($.defaults, $.input, false)",
                "defaults.$": "$.defaults",
                "declared.$": "$.declared",
            },
        )
        reserved = {
            **est.reserved_hyperparameters(None),
            "sagemaker_job_name.$": "States.JsonToString($.merged.TrainingJobName)",
        }
        resolve = sfn.Pass(
            self,
            "ResolveConfig",
            parameters={
                "config": {
                    "TrainingJobName.$": "$.merged.TrainingJobName",
                    "Hyperparameters.$": "States.JsonMerge($.defaults.Hyperparameters, "
                    "$.merged.Hyperparameters, false)",
                    "Channels.$": "States.JsonMerge($.defaults.Channels, $.merged.Channels, false)",
                    "ReservedHyperparameters": reserved,
                },
                "check": {
                    "declared.$": "States.JsonToString($.declared)",
                    "given.$": "States.JsonToString(States.JsonMerge(States.JsonMerge("
                    "$.declared, $.merged.Channels, false), $.declared, false))",
                },
            },
        )
        declared = ", ".join(sorted(est.channel_uris)) or "none"
        bad_name = sfn.Fail(
            self,
            "InvalidJobName",
            error="InvalidExecutionInput",
            cause=f"TrainingJobName must start with '{est.base_job_name}--' (the form "
            f"'{est.base_job_name}--<run>', letters, digits and hyphens, at most 63 characters: "
            "the pipeline's role reaches only the runs named so); leave it out for a generated "
            "name",
        )
        bad_channel = sfn.Fail(
            self,
            "UndeclaredChannel",
            error="InvalidExecutionInput",
            cause=f"Channels may only override the estimator's channels ({declared}); declare "
            "other channels on the ChainerEstimator",
        )
        self._input_ok = sfn.Pass(self, "InputAccepted", result_path=_discard())
        check = (
            sfn.Choice(self, "CheckInput")
            .when(
                _states.condition(
                    _states.negate(
                        _states.string_matches(
                            "$.config.TrainingJobName", _iam.run_name_pattern(est.base_job_name)
                        )
                    )
                ),
                bad_name,
            )
            .when(
                _states.condition(
                    _states.negate(_states.string_equals_path("$.check.given", "$.check.declared"))
                ),
                bad_channel,
            )
            .otherwise(self._input_ok)
        )
        self._prepare_start = defaults
        defaults.next(merge).next(resolve).next(check)
        return sfn.Chain.custom(defaults, [self._input_ok], self._input_ok)

    def _catch_training_failure(self) -> None:
        capacity = sfn.Fail(
            self,
            "TrainingCapacityError",
            error="TrainingCapacityError",
            cause_path="$.trainingError.Cause",
        )
        failed = sfn.Fail(
            self, "TrainingFailed", error="TrainingFailed", cause_path="$.trainingError.Cause"
        )
        # SageMaker could not get instances (CapacityError): fail with its message; start the
        # execution again later, or use spot with a longer max_wait (a documented choice).
        route = (
            sfn.Choice(self, "TrainingError")
            .when(_states.cause_matches("$.trainingError.Cause", _states.CAPACITY_ERROR), capacity)
            .otherwise(failed)
        )
        self.train_task.add_catch(
            route, errors=["States.TaskFailed"], result_path="$.trainingError"
        )

    def _training_parameters(self) -> dict[str, Any]:
        est = self.estimator
        request = est.training_job_request("placeholder")
        del request["TrainingJobName"], request["HyperParameters"]
        request["TrainingJobName.$"] = "$.config.TrainingJobName"
        request["HyperParameters.$"] = (
            "States.JsonMerge($.config.Hyperparameters, $.config.ReservedHyperparameters, false)"
        )
        request["Tags"] = self._tags()
        for channel in request.get("InputDataConfig", []):
            name = channel["ChannelName"]
            if name in est.channels:  # the code channel keeps its fixed URL
                _dynamic_uri(channel, _channel_path(name))
        return request

    def _serving_role(self, removal_policy: RemovalPolicy) -> _iam.PolicyPrincipal:
        """The model's own role: read this pipeline's artifacts and code, pull the image, write
        the endpoint's logs; nothing under ``models/`` can be written with it."""
        est = self.estimator
        role = iam.Role(
            self,
            "ServingRole",
            assumed_by=iam.ServicePrincipal(_iam.SAGEMAKER),
            description="SageMaker execution role of the Chainer pipeline's serving model",
        )
        principal = _iam.PolicyPrincipal.for_role(self, "ServingPolicy", role)
        with principal.batched():
            _iam.bucket_prefix_read(principal, est.output_bucket, est.output_prefix)
            if est.output_kms_key is not None:
                _iam.key_decrypt(principal, est.output_kms_key)
            if not self.isolate_model:
                est.source_code.bind(self, principal)
            _iam.sagemaker_logs_and_metrics(est, principal, "Endpoints")
            est.network.grant(self, principal)
        role.apply_removal_policy(removal_policy)
        # The role's policies are written at synth, under the principal's container.
        container = getattr(principal, "container", None)
        if container is not None:
            RemovalPolicies.of(container).apply(removal_policy)
        else:
            principal.policy.apply_removal_policy(removal_policy)
        self.serving_role = role
        self.serving_principal = principal
        return principal

    def _build_deploy(
        self,
        chain: sfn.Chain,
        instance_count: int,
        workers: int | None,
        extra_env: dict[str, str],
        removal_policy: RemovalPolicy,
    ) -> None:
        est = self.estimator
        principal = self._serving_role(removal_policy)
        with principal.batched():
            image = est.image_source.bind(est, principal, self.endpoint_instance_type)
        env = model_environment(
            entry_point=est.code.entry_point,
            submit_directory=ISOLATED_MODEL_CODE_DIR if self.isolate_model else est.code.s3_url,
            region=est.region,
            container_log_level=est.container_log_level,
            model_server_workers=workers,
            environment=extra_env,
        )
        _metadata.record_model(
            self, environment=env, code_asset_hash=est.code.asset_hash, model_data_asset_hash=None
        )
        name = "$.training.TrainingJobName"
        container: dict[str, Any] = {
            "Image": image.image_uri,
            "Environment": env,
            "ModelDataUrl.$": "$.training.ModelArtifacts",
        }
        model: dict[str, Any] = {
            "ModelName.$": name,
            "ExecutionRoleArn": principal.role.role_arn,
            "PrimaryContainer": container,
            "Tags": self._tags(),
        }
        if self.registry is not None:
            chain = self._build_registry(chain, container)
            model["PrimaryContainer"] = {"ModelPackageName.$": "$.registered.ModelPackageArn"}
        vpc_config = est.network.render()
        if vpc_config is not None:
            model["VpcConfig"] = vpc_config
        if self.isolate_model:
            model["EnableNetworkIsolation"] = True
        deploy_failed = sfn.Fail(
            self,
            "DeploymentFailed",
            error_path="$.deployError.Error",
            cause_path="$.deployError.Cause",
        )
        self.create_model_task = self._sdk(
            "CreateModel", "createModel", model, "$.model", {"ModelArn.$": "$.ModelArn"}
        )
        variant: dict[str, Any] = {"VariantName": "AllTraffic", "ModelName.$": name}
        if self.serverless is not None:
            variant["ServerlessConfig"] = _hosting.serverless_config(self.serverless)
        else:
            variant["InstanceType"] = self.endpoint_instance_type
            variant["InitialInstanceCount"] = instance_count
        variant["InitialVariantWeight"] = 1
        config: dict[str, Any] = {
            "EndpointConfigName.$": name,
            "ProductionVariants": [variant],
            "Tags": self._tags(),
        }
        if self.endpoint_kms_key is not None:
            config["KmsKeyId"] = self.endpoint_kms_key.key_arn
        if self.async_inference is not None:
            config["AsyncInferenceConfig"] = _hosting.async_inference_config(
                self.async_inference, principal
            )
        self.create_endpoint_config_task = self._sdk(
            "CreateEndpointConfig", "createEndpointConfig", config, "$.endpointConfig"
        )
        endpoint = {"EndpointName": self.endpoint_name, "EndpointConfigName.$": name}
        found = {"EndpointStatus.$": "$.EndpointStatus"}
        if self.shadow is not None:  # the shadow config starts from the one in service
            found["EndpointConfigName.$"] = "$.EndpointConfigName"
        self.describe_existing_endpoint_task = self._sdk(
            "FindEndpoint",
            "describeEndpoint",
            {"EndpointName": self.endpoint_name},
            "$.existing",
            found,
        )
        self.create_endpoint_task = self._sdk(
            "CreateEndpoint",
            "createEndpoint",
            {**endpoint, "Tags": self._tags()},
            "$.endpoint",
        )
        update: dict[str, Any] = dict(endpoint)
        if self.guardrails is not None:
            self.rollback_alarms = self.guardrails.create_alarms(
                self, self.metric_invocation_5xx_errors(), self.metric_model_latency()
            )
            update["DeploymentConfig"] = self.guardrails.deployment_config(
                [a.alarm_name for a in self.rollback_alarms]
            )
        self.update_endpoint_task = self._sdk(
            "UpdateEndpoint", "updateEndpoint", update, "$.endpoint"
        )
        self.delete_failed_endpoint_task = self._sdk(
            "DeleteFailedEndpoint",
            "deleteEndpoint",
            {"EndpointName": self.endpoint_name},
            _discard(),
        )
        find = self.describe_existing_endpoint_task
        self._poll_wait = sfn.WaitTime.duration(self._poll)  # one object for both waits
        wait_busy = sfn.Wait(self, "WaitBeforeUpdate", time=self._poll_wait)
        wait_busy.next(find)
        self.delete_failed_endpoint_task.next(wait_busy)

        # Idempotent creates: a retried create whose first attempt succeeded meets its own
        # resource (names are unique per execution), and goes on.
        exists = _states.cause_matches("$.deployError.Cause", _states.ALREADY_EXISTS)

        def already_exists_or_fail(task: sfn.CustomState, id: str, then: sfn.IChainable) -> None:
            route = sfn.Choice(self, id).when(exists, then).otherwise(deploy_failed)
            task.add_catch(route, errors=["States.TaskFailed"], result_path="$.deployError")

        already_exists_or_fail(
            self.create_model_task, "ModelCreated", self.create_endpoint_config_task
        )
        already_exists_or_fail(self.create_endpoint_config_task, "ConfigCreated", find)
        # Another execution created the endpoint meanwhile: look again (then update).
        already_exists_or_fail(self.create_endpoint_task, "EndpointCreatedMeanwhile", find)
        self.shadow_tasks: list[sfn.CustomState] = []
        # With a shadow, every UpdateEndpoint is a promotion: refused, it waits and goes again.
        refused: sfn.IChainable = wait_busy
        if self.shadow is not None:
            refused = _shadow_states.retry_promotion(self, self.update_endpoint_task, deploy_failed)
        update_error = (
            sfn.Choice(self, "UpdateRefused")
            .when(_states.cause_matches("$.deployError.Cause", _states.IN_PROGRESS), refused)
            .otherwise(deploy_failed)
        )
        self.update_endpoint_task.add_catch(
            update_error, errors=["States.TaskFailed"], result_path="$.deployError"
        )
        lookup_error = (
            sfn.Choice(self, "EndpointMissing")
            .when(
                _states.cause_matches("$.deployError.Cause", _states.NOT_FOUND_ENDPOINT),
                self.create_endpoint_task,
            )
            .otherwise(deploy_failed)
        )
        find.add_catch(lookup_error, errors=["States.TaskFailed"], result_path="$.deployError")

        wait = sfn.Wait(self, "WaitForEndpoint", time=self._poll_wait)
        self.describe_endpoint_task = self._sdk(
            "DescribeEndpoint",
            "describeEndpoint",
            {"EndpointName": self.endpoint_name},
            "$.status",
        )
        self.deployment_failed = sfn.Fail(
            self,
            "EndpointFailed",
            error="EndpointDeploymentFailed",
            cause_path="$.status.FailureReason",
        )
        self.deployment_rolled_back = sfn.Fail(
            self,
            "EndpointRolledBack",
            error="EndpointDeploymentRolledBack",
            cause_path="$.status.FailureReason",
        )
        self.not_updated = not_updated = sfn.Fail(
            self,
            "EndpointNotUpdated",
            error="EndpointDeploymentFailed",
            cause="The endpoint is not InService with this execution's endpoint config "
            "(a newer execution updated it, or it is out of service)",
        )
        status = "$.status.EndpointStatus"
        ours = _states.string_equals_path(
            "$.status.EndpointConfigName", "$.training.TrainingJobName"
        )
        reason = _states.is_present("$.status.FailureReason")
        in_service = _states.string_equals(status, "InService")
        self.endpoint_in_service = sfn.Pass(self, "EndpointInService", result_path=_discard())
        # With a shadow, a rolled-back promotion leaves the endpoint on the shadow config: the
        # shadow states complete this Choice (they remove the shadow, see :mod:`.shadow`).
        rolled_back: sfn.IChainable = self.deployment_rolled_back
        if self.shadow is not None:
            rolled_back = self.promotion_rolled_back = sfn.Choice(self, "WasPromotion")
        check = (
            sfn.Choice(self, "EndpointStatus")
            .when(_states.condition(_states.any_status(status, _states.BUSY_STATUSES)), wait)
            .when(_states.condition(_states.all_of(in_service, ours)), self.endpoint_in_service)
            .when(_states.condition(_states.all_of(in_service, reason)), rolled_back)
            .when(
                _states.condition(_states.all_of(_states.string_equals(status, "Failed"), reason)),
                self.deployment_failed,
            )
            .otherwise(not_updated)
        )
        wait.next(self.describe_endpoint_task).next(check)
        existing = "$.existing.EndpointStatus"
        unexpected = sfn.Fail(
            self,
            "UnexpectedEndpointStatus",
            error="EndpointDeploymentFailed",
            cause="The endpoint is in a status the pipeline does not handle (see the "
            "execution history's FindEndpoint output)",
        )
        updatable: sfn.IChainable = self._before_update()
        if self.shadow is not None:
            updatable = self._build_shadow(instance_count, deploy_failed, wait_busy, updatable)
        route = (
            sfn.Choice(self, "RouteByStatus")
            .when(
                _states.condition(_states.any_status(existing, _states.UPDATABLE_STATUSES)),
                updatable,
            )
            .when(
                _states.condition(
                    _states.any_status(existing, (*_states.BUSY_STATUSES, "Deleting"))
                ),
                wait_busy,
            )
            .when(
                sfn.Condition.string_equals(existing, "Failed"),  # one comparison: one object
                self.delete_failed_endpoint_task,
            )
            .otherwise(unexpected)
        )
        find.next(route)

        self.create_endpoint_task.next(wait)
        self.update_endpoint_task.next(wait)
        chain.next(self.create_model_task).next(self.create_endpoint_config_task).next(find)
        self._after_in_service: sfn.INextable = self.endpoint_in_service
        if self.shadow is not None:
            self._after_in_service = _shadow_states.delete_shadow_config(
                self, self.endpoint_in_service
            )
        if self.autoscaling is not None:
            self._after_in_service = self._build_scaling(self.autoscaling, deploy_failed)
        self._end = self._after_in_service
        if self.keep_versions is not None:
            self._end = self._build_cleanup()
        if removal_policy == RemovalPolicy.DESTROY:
            self._finalizer()

    def _build_shadow(
        self,
        instance_count: int,
        deploy_failed: sfn.IChainable,
        wait_busy: sfn.IChainable,
        promote: sfn.IChainable,
    ) -> sfn.IChainable:
        """Shadow first, promote after a quiet bake (see :mod:`chainer_sagemaker_cdk.shadow`)."""
        assert self.shadow is not None
        self.shadow_alarms = self.shadow.create_alarms(
            self,
            self.metric_invocation_5xx_errors(variant_name=SHADOW_VARIANT),
            self.metric_model_latency(variant_name=SHADOW_VARIANT),
        )
        return _shadow_states.shadow_states(
            self,
            self.shadow,
            [a.alarm_name for a in self.shadow_alarms],
            instance_count,
            deploy_failed,
            wait_busy,
            promote,
        )

    def _serving_lookup(self, skip: sfn.IChainable) -> tuple[sfn.IChainable, sfn.INextable, str]:
        """The serving model's registry version: endpoint -> its config's model (named like
        the config) -> the model's ModelPackageName -> its CustomerMetadataProperties. No
        endpoint, no model or a model without a version goes to ``skip``."""
        failed = sfn.Fail(
            self,
            "ServingLookupFailed",
            error_path="$.servingError.Error",
            cause_path="$.servingError.Cause",
        )

        def missing(task: sfn.CustomState, id: str, pattern: str) -> None:
            route = (
                sfn.Choice(self, id)
                .when(_states.cause_matches("$.servingError.Cause", pattern), skip)
                .otherwise(failed)
            )
            task.add_catch(route, errors=["States.TaskFailed"], result_path="$.servingError")

        find = self._sdk(
            "FindServingModel",
            "describeEndpoint",
            {"EndpointName": self.endpoint_name},
            "$.servingEndpoint",
            {"EndpointConfigName.$": "$.EndpointConfigName"},
        )
        missing(find, "NoEndpointYet", _states.NOT_FOUND_ENDPOINT)
        model = self._sdk(
            "DescribeServingModel",
            "describeModel",
            {"ModelName.$": "$.servingEndpoint.EndpointConfigName"},
            "$.servingModel",
            {"PrimaryContainer.$": "$.PrimaryContainer"},
        )
        missing(model, "NoServingModel", _states.NOT_FOUND_MODEL)
        version = self._sdk(
            "DescribeServingVersion",
            "describeModelPackage",
            {"ModelPackageName.$": "$.servingModel.PrimaryContainer.ModelPackageName"},
            "$.servingVersion",
            {"Props.$": "$.CustomerMetadataProperties"},
        )
        version.add_catch(failed, errors=["States.TaskFailed"], result_path="$.servingError")
        has_version = (
            sfn.Choice(self, "ServingHasVersion")
            .when(
                sfn.Condition.is_present("$.servingModel.PrimaryContainer.ModelPackageName"),
                version,
            )
            .otherwise(skip)
        )
        find.next(model).next(has_version)
        self.serving_lookup_tasks = [find, model, version]
        return find, version, "$.servingVersion.Props"

    def _build_registry(self, chain: sfn.Chain, container: dict[str, Any]) -> sfn.Chain:
        """The model package group (a stack resource) and the RegisterModel task."""
        assert self.registry is not None
        assert self.model_package_group_name is not None
        group = sagemaker.CfnModelPackageGroup(
            self,
            "ModelPackageGroup",
            model_package_group_name=self.model_package_group_name,
            model_package_group_description=self.registry.description,
        )
        # Versions outlive the stack (deleting a group that holds versions fails).
        group.apply_removal_policy(RemovalPolicy.RETAIN)
        self.model_package_group = group
        metrics: dict[str, str] = {}
        if self.quality_gate is not None:
            for i, metric in enumerate(self.quality_gate.metric_names):
                metrics[metric] = f"States.Format('{{}}', $.gate.m{i}[0])"
        self.register_model_task = self._sdk(
            "RegisterModel",
            "createModelPackage",
            package_request(
                self.model_package_group_name,
                container,
                self.endpoint_instance_type,
                metrics,
            ),
            "$.registered",
            {"ModelPackageArn.$": "$.ModelPackageArn"},
        )
        self.register_model_task.add_catch(
            sfn.Fail(
                self,
                "RegistrationFailed",
                error_path="$.registryError.Error",
                cause_path="$.registryError.Cause",
            ),
            errors=["States.TaskFailed"],
            result_path="$.registryError",
        )
        return chain.next(self.register_model_task)

    def _scalable_target(self) -> dict[str, str]:
        return {
            "ServiceNamespace": "sagemaker",
            "ResourceId": f"endpoint/{self.endpoint_name}/variant/AllTraffic",
            "ScalableDimension": "sagemaker:variant:DesiredInstanceCount",
        }

    def _scaling_task(self, id: str, api: str, parameters: dict[str, Any]) -> sfn.CustomState:
        task = self._custom(id, f"aws-sdk:applicationautoscaling:{api}", parameters, _discard())
        task.add_retry(
            errors=list(_states.AUTOSCALING_TRANSIENT),
            interval=self._retry_interval,
            backoff_rate=self._backoff,
            max_attempts=6,
        )
        return task

    def _before_update(self) -> sfn.IChainable:
        """With autoscaling: deregister the scalable target first (a missing one is fine)."""
        if self.autoscaling is None:
            return self.update_endpoint_task
        suspend = self._scaling_task(
            "SuspendScaling", "deregisterScalableTarget", self._scalable_target()
        )
        # Not registered yet (first update) or already gone: go on with the update.
        suspend.add_catch(
            self.update_endpoint_task, errors=["States.TaskFailed"], result_path="$.scalingError"
        )
        suspend.next(self.update_endpoint_task)
        self.suspend_scaling_task = suspend
        return suspend

    def _build_scaling(self, scaling: InvocationScaling, failed: sfn.IChainable) -> sfn.INextable:
        """Register the endpoint's variant and its target-tracking policy (each execution)."""
        register = self._scaling_task(
            "RegisterScaling",
            "registerScalableTarget",
            {
                **self._scalable_target(),
                "MinCapacity": scaling.min_capacity,
                "MaxCapacity": scaling.max_capacity,
            },
        )
        policy = self._scaling_task(
            "PutScalingPolicy",
            "putScalingPolicy",
            {
                **self._scalable_target(),
                "PolicyName": "InvocationsPerInstance",
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": scaling.invocations_per_instance,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                },
            },
        )
        for task in (register, policy):
            task.add_catch(failed, errors=["States.TaskFailed"], result_path="$.deployError")
        self._after_in_service.next(register).next(policy)
        self.register_scaling_task = register
        self.put_scaling_policy_task = policy
        return policy

    def _build_cleanup(self) -> sfn.INextable:
        """Delete this pipeline's endpoint configs and models but the newest ``keep_versions``."""
        listed = self._sdk(
            "ListVersions",
            "listEndpointConfigs",
            {
                "NameContains": _iam.run_name(self.prefix, ""),
                "SortBy": "CreationTime",
                "SortOrder": "Descending",
                "MaxResults": 100,
            },
            "$.versions",
        )
        delete_config = self._sdk(
            "DeleteOldEndpointConfig",
            "deleteEndpointConfig",
            {"EndpointConfigName.$": "$.name"},
            _discard(),
        )
        delete_model = self._sdk(
            "DeleteOldModel", "deleteModel", {"ModelName.$": "$.name"}, _discard()
        )
        gone = sfn.Pass(self, "AlreadyDeleted")
        for task in (delete_config, delete_model):
            task.add_catch(gone, errors=["States.TaskFailed"], result_path="$.deleteError")
        keep = sfn.Pass(self, "KeepVersion")
        old = _states.condition(
            _states.all_of(
                _states.number_at_least("$.index", self.keep_versions or 1),
                _states.negate(_states.string_equals_path("$.name", "$.current")),
                _states.string_matches("$.name", _iam.run_name_pattern(self.prefix)),
            )
        )
        delete_config.next(delete_model)
        per_version = sfn.Choice(self, "IsOldVersion").when(old, delete_config).otherwise(keep)
        cleanup = sfn.Map(
            self,
            "DeleteOldVersions",
            items_path="$.versions.EndpointConfigs",
            # Paths as ASL writes them (JsonPath.string_at would be a kernel call each).
            item_selector={
                "name.$": "$$.Map.Item.Value.EndpointConfigName",
                "index.$": "$$.Map.Item.Index",
                "current.$": "$.training.TrainingJobName",
            },
            max_concurrency=1,
            result_path=_discard(),
        )
        cleanup.item_processor(per_version)
        # The deployment succeeded: a failed clean-up is recorded in the output, not fatal.
        done = sfn.Pass(self, "Deployed")
        cleanup.add_catch(done, errors=["States.ALL"], result_path="$.cleanupError")
        listed.add_catch(done, errors=["States.ALL"], result_path="$.cleanupError")
        self._after_in_service.next(listed).next(cleanup).next(done)
        self.list_versions_task = listed
        self.delete_config_task = delete_config
        self.delete_model_task = delete_model
        return done

    def _finalizer(self) -> None:
        """Delete the endpoint on ``cdk destroy`` (endpoint_removal_policy=DESTROY): an
        AwsCustomResource with its own role and managed policy, as the model-data lookup."""
        arn = self._endpoint_arn()
        role = iam.Role(
            self,
            "EndpointFinalizerRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Deletes the Chainer pipeline's endpoint when the stack is deleted",
        )
        principal = _iam.PolicyPrincipal.for_role(self, "EndpointFinalizerPolicy", role)
        logs_arn = self._stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/lambda/*",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        _iam.add(
            principal,
            iam.PolicyStatement(actions=["sagemaker:DeleteEndpoint"], resources=[arn]),
            iam.PolicyStatement(actions=["logs:CreateLogGroup"], resources=[logs_arn]),
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[f"{logs_arn}:log-stream:*"],
            ),
        )
        self.finalizer = cr.AwsCustomResource(
            self,
            "EndpointFinalizer",
            on_delete=cr.AwsSdkCall(
                service="SageMaker",
                action="deleteEndpoint",
                parameters={"EndpointName": self.endpoint_name},
                ignore_error_codes_matching="ValidationException",
            ),
            role=role,
            install_latest_aws_sdk=False,
        )
        self.finalizer.node.add_dependency(principal.policy)
        _acknowledge_lookup_function(self._stack)
        if self.serving_role is not None:
            # The endpoint goes first, then the role it ran under.
            self.finalizer.node.add_dependency(self.serving_role)

    # -- StateMachineFragment -------------------------------------------------------------------
    @property
    def start_state(self) -> sfn.State:
        return self._prepare_start

    @property
    def end_states(self) -> list[sfn.INextable]:
        return [self._end]

    @property
    def tasks(self) -> list[sfn.CustomState]:
        """Every service task, for ``add_retry``/``add_catch`` in one loop."""
        names = (
            "train_task",
            "create_model_task",
            "create_endpoint_config_task",
            "describe_existing_endpoint_task",
            "create_endpoint_task",
            "update_endpoint_task",
            "delete_failed_endpoint_task",
            "describe_endpoint_task",
            "suspend_scaling_task",
            "register_scaling_task",
            "put_scaling_policy_task",
            "list_versions_task",
            "approval_task",
            "register_model_task",
        )  # the clean-up's delete tasks run inside a Map: a catch cannot leave it
        tasks = [getattr(self, n) for n in names if hasattr(self, n)]
        return (
            tasks
            + list(getattr(self, "serving_lookup_tasks", []))
            + list(getattr(self, "shadow_tasks", []))
        )

    # -- the endpoint -----------------------------------------------------------------------------
    def _endpoint_arn(self) -> str:
        # SageMaker ARNs are lower case whatever the name's case.
        name = (
            self.endpoint_name if is_unresolved(self.endpoint_name) else self.endpoint_name.lower()
        )
        return self._arn("sagemaker", "endpoint", name)

    def _arn(self, service: str, resource: str, name: str) -> str:
        """``arn:<partition>:<service>:<region>:<account>:<resource>/<name>`` of this stack:
        what ``Stack.format_arn`` writes (the same ``Fn::Join`` once resolved), without a round
        trip to jsii's kernel per ARN (region and account are read once)."""
        if self._region_account is None:
            self._region_account = (self._stack.region, self._stack.account)
        region, account = self._region_account
        return f"arn:{self._partition}:{service}:{region}:{account}:{resource}/{name}"

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``sagemaker:InvokeEndpoint`` on the pipeline's endpoint; an async one also
        through S3 (the request uploaded, the output or failure read)."""
        if self.async_inference is not None:
            return _hosting.async_grant_invoke(grantee, self.async_inference, self._endpoint_arn())
        return iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"],
            resource_arns=[self._endpoint_arn()],
        )

    def metric(
        self, metric_name: str, *, variant_name: str = "AllTraffic", **props: Any
    ) -> cloudwatch.Metric:
        """An ``AWS/SageMaker`` metric of one of the endpoint's variants (left out,
        ``AllTraffic``; a shadow deployment's new model is ``Shadow``)."""
        return cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name=metric_name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": variant_name},
            **props,
        )

    def metric_invocations(self, **props: Any) -> cloudwatch.Metric:
        return self.metric("Invocations", **{"statistic": "Sum", **props})

    def metric_model_latency(self, **props: Any) -> cloudwatch.Metric:
        return self.metric("ModelLatency", **{"statistic": "Average", **props})

    def metric_invocation_5xx_errors(self, **props: Any) -> cloudwatch.Metric:
        return self.metric("Invocation5XXErrors", **{"statistic": "Sum", **props})

    # -- IAM ----------------------------------------------------------------------------------
    def grant_run(self, grantee: iam.IGrantable) -> iam.Grant:
        """Give a state machine role what these states call, and nothing else."""
        principal = grantee.grant_principal
        prefix = self.prefix.lower()
        # Plain IAM JSON (_iam.statement): no kernel object per statement; merged at synth.
        statements: list[_iam.StatementLike] = []

        def arn(resource: str, name: str) -> str:
            return self._arn("sagemaker", resource, name)

        jobs = arn("training-job", _iam.run_name_pattern(prefix))
        grant = iam.Grant.add_to_principal(
            grantee=grantee,
            actions=[
                "sagemaker:CreateTrainingJob",
                "sagemaker:DescribeTrainingJob",
                "sagemaker:StopTrainingJob",
                "sagemaker:AddTags",
                "sagemaker:ListTags",
            ],
            resource_arns=[jobs],
        )
        # https://docs.aws.amazon.com/step-functions/latest/dg/sagemaker-iam.html
        # (createTrainingJob.sync): Step Functions tags the job it starts
        # (MANAGED_BY_AWS, AWS_STEP_FUNCTIONS_EXECUTION_ARN) and lists its tags, so AddTags and
        # ListTags are needed even without user tags (aws-cdk #32294, PR #32536).
        statements.append(
            _iam.statement(
                ["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                [self._arn("events", "rule", "StepFunctionsGetEventsForSageMakerTrainingJobsRule")],
            )
        )
        _iam.pass_role(principal, self.estimator.role)
        if self.approval is not None:
            _approval.grant_publish(principal, self.approval.topic)
        if self.deploy:
            statements += self._deploy_statements(arn, prefix)
            if self.serving_role is not None:
                _iam.pass_role(principal, self.serving_role)
        _iam.add(principal, *statements)
        if getattr(self, "_acknowledge_list", False):
            target = getattr(principal, "container", None) or self
            _iam.acknowledge(
                target,
                ["AwsSolutions-IAM5[Resource::*]"],
                "sagemaker:ListEndpointConfigs has no resource type (Service Authorization "
                "Reference) and Application Auto Scaling's scalable targets have generated "
                "ids; the other '*' statements are log delivery and X-Ray, which have no "
                "resource-level permissions either",
            )
            if self.autoscaling is not None:
                _iam.acknowledge(
                    target,
                    [
                        "AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:cloudwatch:"
                        "<AWS::Region>:<AWS::AccountId>:alarm:TargetTracking*]"
                    ],
                    "the alarms target tracking creates are named TargetTracking-<generated>",
                )
        return grant

    def _deploy_statements(
        self, arn: Callable[[str, str], str], prefix: str
    ) -> list[_iam.StatementLike]:
        endpoint = self._endpoint_arn()
        configs = arn("endpoint-config", _iam.run_name_pattern(prefix))
        models = arn("model", _iam.run_name_pattern(prefix))
        # https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html
        # Creating with Tags needs sagemaker:AddTags on the created resource.
        statements: list[_iam.StatementLike] = [
            _iam.statement(
                ["sagemaker:CreateModel", "sagemaker:DeleteModel", "sagemaker:AddTags"], [models]
            ),
            _iam.statement(
                [
                    "sagemaker:CreateEndpointConfig",
                    "sagemaker:DeleteEndpointConfig",
                    "sagemaker:AddTags",
                ],
                [configs],
            ),
            _iam.statement(
                ["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"], [endpoint, configs]
            ),
            _iam.statement(
                ["sagemaker:DescribeEndpoint", "sagemaker:DeleteEndpoint", "sagemaker:AddTags"],
                [endpoint],
            ),
        ]
        if self.keep_versions is not None:
            # List actions have no resource type (Service Authorization Reference).
            statements.append(_iam.statement(["sagemaker:ListEndpointConfigs"], ["*"]))
            self._acknowledge_list = True
        if self.autoscaling is not None:
            statements += self._scaling_statements(configs)
        if self.model_package_group_name is not None:
            statements += self._registry_statements()
        if self.rollback_alarms:
            # https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-configuration.html:
            # the caller of UpdateEndpoint needs cloudwatch:DescribeAlarms on the alarms.
            statements.append(
                iam.PolicyStatement(
                    actions=["cloudwatch:DescribeAlarms"],
                    resources=[a.alarm_arn for a in self.rollback_alarms],
                )
            )
        if self.shadow is not None:
            statements += self._shadow_statements(configs)
        if self.endpoint_kms_key is not None:
            # kms:GrantIsForAWSResource is a condition key of CreateGrant only: on DescribeKey
            # it would never hold (parliament: UNKNOWN_CONDITION_FOR_ACTION).
            key = self.endpoint_kms_key.key_arn
            statements += [
                _iam.statement(
                    ["kms:CreateGrant"], [key], {"Bool": {"kms:GrantIsForAWSResource": "true"}}
                ),
                _iam.statement(["kms:DescribeKey"], [key]),
            ]
        return statements

    def _shadow_statements(self, configs: str) -> list[iam.PolicyStatement]:
        """Read the config in service (its production model), and the shadow's alarms
        (DescribeAlarms has the alarm resource type: Service Authorization Reference,
        https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazoncloudwatch.html)."""
        return [
            iam.PolicyStatement(actions=["sagemaker:DescribeEndpointConfig"], resources=[configs]),
            iam.PolicyStatement(
                actions=["cloudwatch:DescribeAlarms"],
                resources=[a.alarm_arn for a in self.shadow_alarms],
            ),
        ]

    def _registry_statements(self) -> list[iam.PolicyStatement]:
        """CreateModelPackage in the group, and the model package a model is created
        from (https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html:
        CreateModelPackage acts on model-package and model-package-group; CreateModel with
        ModelPackageName reads the package, DescribeModelPackage, not verified in an account)."""
        group = (self.model_package_group_name or "").lower()
        packages = self._stack.format_arn(
            service="sagemaker", resource="model-package", resource_name=f"{group}/*"
        )
        group_arn = self._stack.format_arn(
            service="sagemaker", resource="model-package-group", resource_name=group
        )
        statements = [
            iam.PolicyStatement(
                actions=["sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackage"],
                resources=[packages, group_arn],
            )
        ]
        if self._compare_serving:
            # The serving model (named like its endpoint config, under the prefix).
            statements.append(
                iam.PolicyStatement(
                    actions=["sagemaker:DescribeModel"],
                    resources=[
                        self._stack.format_arn(
                            service="sagemaker",
                            resource="model",
                            resource_name=_iam.run_name_pattern(self.prefix.lower()),
                        )
                    ],
                )
            )
        return statements

    def _scaling_statements(self, configs: str) -> list[iam.PolicyStatement]:
        """What registering a SageMaker variant with Application Auto Scaling needs:
        https://docs.aws.amazon.com/sagemaker/latest/dg/endpoint-auto-scaling-prerequisites.html
        (named actions instead of application-autoscaling:*; scalable targets have generated
        ids, so '*')."""
        self._acknowledge_list = True
        stack = self._stack
        return [
            iam.PolicyStatement(
                actions=[
                    "application-autoscaling:RegisterScalableTarget",
                    "application-autoscaling:DeregisterScalableTarget",
                    "application-autoscaling:PutScalingPolicy",
                    "application-autoscaling:DescribeScalableTargets",
                    "application-autoscaling:DescribeScalingPolicies",
                ],
                resources=["*"],
            ),
            iam.PolicyStatement(
                actions=[
                    "sagemaker:DescribeEndpointConfig",
                    "sagemaker:UpdateEndpointWeightsAndCapacities",
                ],
                resources=[self._endpoint_arn(), configs],
            ),
            iam.PolicyStatement(
                actions=[
                    "cloudwatch:PutMetricAlarm",
                    "cloudwatch:DescribeAlarms",
                    "cloudwatch:DeleteAlarms",
                ],
                resources=[
                    stack.format_arn(
                        service="cloudwatch",
                        resource="alarm",
                        resource_name="TargetTracking*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            ),
            iam.PolicyStatement(
                actions=["iam:CreateServiceLinkedRole"],
                resources=[
                    stack.format_arn(
                        service="iam",
                        region="",
                        resource="role",
                        resource_name="aws-service-role/sagemaker.application-autoscaling."
                        "amazonaws.com/AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint",
                    )
                ],
                conditions={
                    "StringLike": {
                        "iam:AWSServiceName": "sagemaker.application-autoscaling.amazonaws.com"
                    }
                },
            ),
        ]


def _default_job_name(base: str) -> dict[str, str]:
    """``<base>--<uuid>`` per execution. A plain base (letters, digits and hyphens, as the
    estimator checks: nothing to escape) is written as ``JsonPath.format`` writes the
    intrinsic, without its two round trips to jsii's kernel."""
    pattern = _iam.run_name("{}", "{}")
    if is_unresolved(base) or not re.fullmatch(r"[A-Za-z0-9-]+", base):
        return {"TrainingJobName": sfn.JsonPath.format(pattern, base, sfn.JsonPath.uuid())}
    return {"TrainingJobName.$": f"States.Format('{pattern}', '{base}', States.UUID())"}


@functools.cache
def _discard() -> str:
    """``sfn.JsonPath.DISCARD`` (a kernel call each time it is read), read once."""
    return sfn.JsonPath.DISCARD


def _dynamic_uri(channel: dict[str, Any], path: str) -> dict[str, Any]:
    source = channel["DataSource"]["S3DataSource"]
    del source["S3Uri"]
    source["S3Uri.$"] = path
    return channel


def _channel_path(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"$.config.Channels.{name}"
    return f"$.config.Channels['{name}']"
