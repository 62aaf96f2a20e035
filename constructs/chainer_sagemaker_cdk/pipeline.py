"""Training through Step Functions: train (.sync) -> model -> endpoint config -> create or
update the endpoint -> wait until InService.

Execution input (all optional)::

    {"TrainingJobName": "<base_job_name>-...",          # default: <base_job_name>-<uuid>
     "Hyperparameters": {"epochs": "20"},                # JSON-encoded strings, merged per key
     "Channels": {"train": "s3://bucket/other/prefix"}}  # per channel, over the defaults

The model and the endpoint config take the training job's name, so every execution creates
fresh ones; the endpoint keeps its name and is updated in place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

from aws_cdk import Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from . import _iam, _metadata
from ._validation import is_unresolved, require, stack_of
from .estimator import ChainerEstimator
from .instance import has_instance_storage, normalize_instance_type
from .model import ISOLATED_MODEL_CODE_DIR, model_environment

__all__ = ["TrainingPipelineFragment"]

_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_WAITING = ("Creating", "Updating", "SystemUpdating")


class TrainingPipelineFragment(sfn.StateMachineFragment):
    """The pipeline's states, to embed in a state machine of your own.

    Call :meth:`grant_run` with your state machine's role: the states are plain service
    integrations and carry no policies. Every task is an attribute (``train_task``, ...) for
    ``add_retry``/``add_catch``.
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
        :param poll_interval: between DescribeEndpoint calls; left out, 30 seconds.
        :param isolate_model: run the model without network access. An isolated container
            cannot download its code, so it reads ``/opt/ml/model/code``: the training script
            must copy its code to ``$SM_MODEL_DIR/code``. Left out, False (the model downloads
            the code from S3), also when the training job itself was isolated.
        """
        super().__init__(scope, id)
        self.estimator = estimator
        self.deploy = deploy
        self._partition = stack_of(self).partition
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
        self.endpoint_kms_key: kms.IKey | None = None
        if deploy and encrypt_endpoint_storage:
            require(
                not has_instance_storage(self.endpoint_instance_type),
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
        self.isolate_model = isolate_model

        self.prepare_states = self._prepare()
        self.train_task = self._custom(
            "Train",
            "sagemaker:createTrainingJob.sync",
            self._training_parameters(),
            "$.training",
            {
                "TrainingJobName.$": "$.TrainingJobName",
                "ModelArtifacts.$": "$.ModelArtifacts.S3ModelArtifacts",
            },
        )
        chain = self.prepare_states.next(self.train_task)
        self._end: sfn.INextable = self.train_task
        if deploy:
            self._build_deploy(
                chain,
                endpoint_instance_count,
                model_server_workers,
                model_environment_variables or {},
            )

    # -- states -------------------------------------------------------------------------------
    def _custom(
        self,
        id: str,
        integration: str,
        parameters: dict[str, Any],
        result_path: str,
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

    def _prepare(self) -> sfn.Chain:
        est = self.estimator
        defaults = sfn.Pass(
            self,
            "Defaults",
            parameters={
                "defaults": {
                    "TrainingJobName": sfn.JsonPath.format(
                        "{}-{}", est.base_job_name, sfn.JsonPath.uuid()
                    ),
                    "Hyperparameters": dict(est.hyperparameters),
                    "Channels": dict(est.channel_uris),
                },
                "input.$": "$",
            },
        )
        merge = sfn.Pass(
            self,
            "ApplyInput",
            parameters={
                "merged.$": "States.JsonMerge($.defaults, $.input, false)",
                "defaults.$": "$.defaults",
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
                }
            },
        )
        return defaults.next(merge).next(resolve)

    def _training_parameters(self) -> dict[str, Any]:
        est = self.estimator
        request = est.training_job_request("placeholder")
        del request["TrainingJobName"], request["HyperParameters"]
        request["TrainingJobName.$"] = "$.config.TrainingJobName"
        request["HyperParameters.$"] = (
            "States.JsonMerge($.config.Hyperparameters, $.config.ReservedHyperparameters, false)"
        )
        for channel in request.get("InputDataConfig", []):
            name = channel["ChannelName"]
            if name in est.channels:  # the code channel keeps its fixed URL
                _dynamic_uri(channel, _channel_path(name))
        return request

    def _build_deploy(
        self, chain: sfn.Chain, instance_count: int, workers: int | None, extra_env: dict[str, str]
    ) -> None:
        est = self.estimator
        principal = est.grant_principal
        with principal.batched() if isinstance(principal, _iam.PolicyPrincipal) else nullcontext():
            image = est.image_source.bind(est, principal, self.endpoint_instance_type)
            _iam.sagemaker_logs_and_metrics(est, principal, "Endpoints")
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
        model: dict[str, Any] = {
            "ModelName.$": "$.config.TrainingJobName",
            "ExecutionRoleArn": est.role.role_arn,
            "PrimaryContainer": {
                "Image": image.image_uri,
                "Environment": env,
                "ModelDataUrl.$": "$.training.ModelArtifacts",
            },
        }
        vpc_config = est.network.render()
        if vpc_config is not None:
            model["VpcConfig"] = vpc_config
        if self.isolate_model:
            model["EnableNetworkIsolation"] = True
        self.create_model_task = self._custom(
            "CreateModel", "sagemaker:createModel", model, "$.model", {"ModelArn.$": "$.ModelArn"}
        )
        config: dict[str, Any] = {
            "EndpointConfigName.$": "$.config.TrainingJobName",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName.$": "$.config.TrainingJobName",
                    "InstanceType": self.endpoint_instance_type,
                    "InitialInstanceCount": instance_count,
                    "InitialVariantWeight": 1,
                }
            ],
        }
        if self.endpoint_kms_key is not None:
            config["KmsKeyId"] = self.endpoint_kms_key.key_arn
        self.create_endpoint_config_task = self._custom(
            "CreateEndpointConfig",
            "sagemaker:createEndpointConfig",
            config,
            "$.endpointConfig",
            {"EndpointConfigArn.$": "$.EndpointConfigArn"},
        )
        endpoint = {
            "EndpointName": self.endpoint_name,
            "EndpointConfigName.$": "$.config.TrainingJobName",
        }
        self.describe_existing_endpoint_task = self._custom(
            "FindEndpoint",
            "aws-sdk:sagemaker:describeEndpoint",
            {"EndpointName": self.endpoint_name},
            "$.existing",
            {"EndpointStatus.$": "$.EndpointStatus"},
        )
        self.create_endpoint_task = self._custom(
            "CreateEndpoint", "sagemaker:createEndpoint", endpoint, "$.endpoint"
        )
        self.update_endpoint_task = self._custom(
            "UpdateEndpoint", "sagemaker:updateEndpoint", endpoint, "$.endpoint"
        )
        # DescribeEndpoint fails (ValidationException) when the endpoint does not exist yet:
        # any failure of that lookup means "create"; CreateEndpoint then reports real problems.
        self.describe_existing_endpoint_task.add_catch(
            self.create_endpoint_task, errors=["States.TaskFailed"], result_path="$.notFound"
        )
        wait = sfn.Wait(self, "WaitForEndpoint", time=sfn.WaitTime.duration(self._poll))
        self.describe_endpoint_task = self._custom(
            "DescribeEndpoint",
            "aws-sdk:sagemaker:describeEndpoint",
            {"EndpointName": self.endpoint_name},
            "$.status",
        )
        self.endpoint_in_service = sfn.Pass(self, "EndpointInService")
        self.deployment_failed = sfn.Fail(
            self,
            "EndpointFailed",
            error="EndpointDeploymentFailed",
            cause_path="$.status.FailureReason",
        )
        self.deployment_rolled_back = sfn.Fail(
            self,
            "EndpointNotUpdated",
            error="EndpointDeploymentFailed",
            cause="The endpoint is not InService with this execution's endpoint config "
            "(update rolled back, or the endpoint is out of service)",
        )
        status = "$.status.EndpointStatus"
        check = (
            sfn.Choice(self, "EndpointStatus")
            .when(
                sfn.Condition.or_(*[sfn.Condition.string_equals(status, s) for s in _WAITING]), wait
            )
            .when(
                sfn.Condition.and_(
                    sfn.Condition.string_equals(status, "InService"),
                    sfn.Condition.string_equals_json_path(
                        "$.status.EndpointConfigName", "$.config.TrainingJobName"
                    ),
                ),
                self.endpoint_in_service,
            )
            .when(sfn.Condition.is_present("$.status.FailureReason"), self.deployment_failed)
            .otherwise(self.deployment_rolled_back)
        )
        wait.next(self.describe_endpoint_task).next(check)
        self.create_endpoint_task.next(wait)
        self.update_endpoint_task.next(wait)
        chain.next(self.create_model_task).next(self.create_endpoint_config_task).next(
            self.describe_existing_endpoint_task
        ).next(self.update_endpoint_task)
        self._end = self.endpoint_in_service

    # -- StateMachineFragment -------------------------------------------------------------------
    @property
    def start_state(self) -> sfn.State:
        return self.prepare_states.start_state  # type: ignore[return-value]

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
            "describe_endpoint_task",
        )
        return [getattr(self, n) for n in names if hasattr(self, n)]

    # -- IAM ----------------------------------------------------------------------------------
    def grant_run(self, grantee: iam.IGrantable) -> None:
        """Give a state machine role what these states call, and nothing else."""
        principal = grantee.grant_principal
        stack = stack_of(self)
        prefix = self.estimator.base_job_name.lower()
        statements: list[iam.PolicyStatement] = []

        def arn(resource: str, name: str) -> str:
            return stack.format_arn(service="sagemaker", resource=resource, resource_name=name)

        jobs = arn("training-job", f"{prefix}*")
        job_actions = [
            "sagemaker:CreateTrainingJob",
            "sagemaker:DescribeTrainingJob",
            "sagemaker:StopTrainingJob",
        ]
        if self.estimator.tags:
            job_actions.append("sagemaker:AddTags")
        statements.append(iam.PolicyStatement(actions=job_actions, resources=[jobs]))
        statements.append(
            iam.PolicyStatement(
                actions=["events:PutTargets", "events:PutRule", "events:DescribeRule"],
                resources=[
                    stack.format_arn(
                        service="events",
                        resource="rule",
                        resource_name="StepFunctionsGetEventsForSageMakerTrainingJobsRule",
                    )
                ],
            )
        )
        _iam.pass_role(principal, self.estimator.role)
        if self.deploy:
            statements += self._deploy_statements(arn, prefix)
        _iam.add(principal, *statements)

    def _deploy_statements(
        self, arn: Callable[[str, str], str], prefix: str
    ) -> list[iam.PolicyStatement]:
        statements: list[iam.PolicyStatement] = []
        endpoint = arn("endpoint", self.endpoint_name.lower())
        configs = arn("endpoint-config", f"{prefix}*")
        statements.append(
            iam.PolicyStatement(
                actions=["sagemaker:CreateModel"], resources=[arn("model", f"{prefix}*")]
            )
        )
        statements.append(
            iam.PolicyStatement(actions=["sagemaker:CreateEndpointConfig"], resources=[configs])
        )
        statements.append(
            iam.PolicyStatement(
                actions=["sagemaker:CreateEndpoint", "sagemaker:UpdateEndpoint"],
                resources=[endpoint, configs],
            )
        )
        statements.append(
            iam.PolicyStatement(actions=["sagemaker:DescribeEndpoint"], resources=[endpoint])
        )
        if self.endpoint_kms_key is not None:
            statements.append(
                iam.PolicyStatement(
                    actions=["kms:CreateGrant", "kms:DescribeKey"],
                    resources=[self.endpoint_kms_key.key_arn],
                    conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
                )
            )
        return statements


def _dynamic_uri(channel: dict[str, Any], path: str) -> dict[str, Any]:
    source = channel["DataSource"]["S3DataSource"]
    del source["S3Uri"]
    source["S3Uri.$"] = path
    return channel


def _channel_path(name: str) -> str:
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        return f"$.config.Channels.{name}"
    return f"$.config.Channels['{name}']"
