"""``TrainingPipeline``: the pipeline fragment in a ready state machine (logs ALL, X-Ray)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsii
from aws_cdk import ArnFormat, Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from . import _iam
from ._approval import Approval
from ._validation import stack_of
from .endpoint import AsyncInference, ServerlessConfig
from .estimator import ChainerEstimator
from .guardrails import DeploymentGuardrails
from .pipeline import InvocationScaling, TrainingPipelineFragment
from .quality_gate import QualityGate
from .registry import ModelRegistry
from .shadow import ShadowDeployment

__all__ = ["TrainingPipeline"]


@jsii.implements(iam.IGrantable)
class TrainingPipeline(Construct):
    """A Step Functions state machine that trains, then deploys or updates an endpoint.

    Start it with an empty input (``{}``) for the defaults, or override the job name,
    hyperparameters and channels (see :mod:`chainer_sagemaker_cdk.pipeline`).

    It is an ``iam.IGrantable`` whose principal is the state machine's role, as for
    ``sfn.StateMachine``: ``bucket.grant_read(pipeline)`` lets the execution's own calls (a
    state you add after the pipeline, the ``transform=`` step) read the bucket, in the role's
    managed policies. The training jobs run under the estimator's role:
    ``bucket.grant_read(estimator)`` (or ``estimator.grant_read_input``) for what they read.
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
        transform: Callable[[TrainingPipelineFragment], Any] | None = None,
        state_machine_name: str | None = None,
        timeout: Duration | None = None,
        log_retention: logs.RetentionDays = logs.RetentionDays.ONE_YEAR,
        logs_kms_key: kms.IKey | None = None,
        role: iam.IRole | None = None,
    ) -> None:
        """Define the state machine; the fragment's props are passed through.

        :param estimator: what to train.
        :param deploy: False stops after training; left out, the model is deployed.
        :param endpoint_name: left out, the estimator's ``base_job_name``.
        :param endpoint_instance_type: left out, ``ml.m5.large``.
        :param endpoint_instance_count: left out, 1.
        :param endpoint_kms_key: left out, a key is created.
        :param encrypt_endpoint_storage: left out, True.
        :param model_server_workers: left out, one worker per CPU.
        :param model_environment_variables: left out, none.
        :param poll_interval: left out, 30 seconds.
        :param isolate_model: left out, False (see :class:`TrainingPipelineFragment`).
        :param keep_versions: endpoint configs and models kept after a deployment; left out, 2
            (None keeps all).
        :param endpoint_removal_policy: left out, ``RETAIN`` (``DESTROY`` deletes the endpoint
            on ``cdk destroy``).
        :param retry_interval: left out, 2 seconds.
        :param retry_backoff_rate: left out, 2.
        :param resource_limit_wait: left out, 1 minute.
        :param autoscaling: ``InvocationScaling(max_capacity=4, invocations_per_instance=500)``
            scales the endpoint; left out, a fixed instance count.
        :param quality_gate: ``QualityGate(thresholds=[MetricThreshold("validation:accuracy",
            ">=", 0.9)])`` deploys only a model whose final metrics meet every threshold; a
            rejected model ends the execution in ``ModelRejected``. Left out, no gate.
        :param approval: ``Approval(topic=...)`` publishes the metrics and a task token to the
            topic and waits for ``client.approval.approve``/``reject``; left out, none.
        :param registry: ``ModelRegistry()`` registers each accepted model as a version of a
            model package group (created here) and deploys that version; left out, none.
        :param guardrails: ``DeploymentGuardrails(traffic="CANARY", step_percent=10)`` shifts
            each update's traffic blue/green with rollback on the 5xx and latency alarms it
            creates (and yours); left out, SageMaker's default update.
        :param serverless: ``ServerlessConfig(memory_size_in_mb=2048, max_concurrency=5)`` runs
            the endpoint serverless; left out, on instances.
        :param async_inference: ``AsyncInference(bucket=...)`` makes the endpoint asynchronous
            (requests and responses in S3); left out, real-time.
        :param shadow: ``ShadowDeployment(bake_time=Duration.hours(1))`` serves each new model
            as a shadow variant first and promotes it when its alarms stayed quiet; left out,
            straight to production.
        :param state_machine_name: left out, CloudFormation generates one.
        :param timeout: the execution's limit; left out, the job's ``max_wait`` (or
            ``max_run``) plus 2 hours for deployment.
        :param log_retention: left out, one year.
        :param logs_kms_key: encrypts the log group; left out, a key is created.
        :param role: the state machine's role; left out, one is created with only what the
            states call. A role you give gets the same grants.
        :param transform: builds a step to run once the pipeline is done, from its fragment,
            e.g. ``lambda f: ChainerTransformer(self, "Score", pipeline=f, ...).step(self,
            "ScoreTestSet")`` (scores a test set with the model just trained); the step's
            ``grant_run`` gets this role. Left out, none.
        """
        super().__init__(scope, id)
        self.fragment = TrainingPipelineFragment(
            self,
            "Pipeline",
            estimator=estimator,
            deploy=deploy,
            endpoint_name=endpoint_name,
            endpoint_instance_type=endpoint_instance_type,
            endpoint_instance_count=endpoint_instance_count,
            endpoint_kms_key=endpoint_kms_key,
            encrypt_endpoint_storage=encrypt_endpoint_storage,
            model_server_workers=model_server_workers,
            model_environment_variables=model_environment_variables,
            poll_interval=poll_interval,
            isolate_model=isolate_model,
            keep_versions=keep_versions,
            endpoint_removal_policy=endpoint_removal_policy,
            retry_interval=retry_interval,
            retry_backoff_rate=retry_backoff_rate,
            resource_limit_wait=resource_limit_wait,
            autoscaling=autoscaling,
            quality_gate=quality_gate,
            approval=approval,
            registry=registry,
            guardrails=guardrails,
            serverless=serverless,
            async_inference=async_inference,
            shadow=shadow,
        )
        self.transform_step = transform(self.fragment) if transform is not None else None
        stack = stack_of(self)
        self.logs_key = logs_kms_key or kms.Key(
            self,
            "LogsKey",
            enable_key_rotation=True,
            description="Chainer training pipeline execution logs",
        )
        self.logs_key.grant_encrypt_decrypt(
            iam.ServicePrincipal(f"logs.{stack.region}.{stack.url_suffix}")
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=self.logs_key,
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.role = role or iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Chainer training pipeline state machine",
        )
        principal = _iam.PolicyPrincipal.for_role(self, "Policy", self.role)
        self._grant_principal: iam.IPrincipal = principal  # type: ignore[assignment]
        with principal.batched():
            self.fragment.grant_run(self.grant_principal)
            if self.transform_step is not None:
                self.transform_step.grant_run(self.grant_principal)
            self._grant_observability()
        run = estimator.max_wait or estimator.max_run
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_chainable(
                self.fragment
                if self.transform_step is None
                else self.fragment.next(self.transform_step)
            ),
            state_machine_name=state_machine_name,
            # Grants are made above, into managed policies; CDK's own additions are dropped.
            # An immutable import of the role by ARN: the ARN's GetAtt orders role and machine,
            # so CDK's DependsOn on the role would be redundant (cfn-lint W3005).
            role=iam.Role.from_role_arn(
                self, "StateMachineRole", self.role.role_arn, mutable=False
            ),
            timeout=timeout or run.plus(Duration.hours(2)),
            tracing_enabled=True,
            logs=sfn.LogOptions(
                destination=self.log_group, level=sfn.LogLevel.ALL, include_execution_data=True
            ),
        )
        self.state_machine.node.add_dependency(self.grant_principal.policy)  # type: ignore[attr-defined]
        group = getattr(self.fragment, "model_package_group", None)
        if group is not None:  # executions register versions in it
            self.state_machine.node.add_dependency(group)
        cfn = self.state_machine.node.default_child
        assert isinstance(cfn, sfn.CfnStateMachine)
        # The resources each execution creates carry the state machine's tags: the stack's,
        # and those of Tags.of(pipeline) (rendered at synth, after Tags.of has run).
        self.fragment.tag_source = cfn.tags
        self.state_machine_arn = self.state_machine.state_machine_arn
        self.endpoint_name = self.fragment.endpoint_name

    @property
    def grant_principal(self) -> iam.IPrincipal:
        """The state machine role's principal (``iam.IGrantable``): grants land in its
        managed policies."""
        return self._grant_principal

    def _grant_observability(self) -> None:
        # Log delivery and X-Ray have no resource-level permissions (Step Functions docs).
        # Plain IAM JSON: no PolicyStatement objects to create and render in the kernel.
        _iam.add(
            self.grant_principal,
            _iam.statement(list(_iam.LOG_DELIVERY_ACTIONS), ["*"]),
            _iam.statement(
                [
                    "xray:PutTraceSegments",
                    "xray:PutTelemetryRecords",
                    "xray:GetSamplingRules",
                    "xray:GetSamplingTargets",
                ],
                ["*"],
            ),
        )

    @property
    def serving_role(self) -> iam.IRole | None:
        """The role the deployed model runs under (None with ``deploy=False``)."""
        return self.fragment.serving_role

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow invoking the endpoint the pipeline deploys."""
        return self.fragment.grant_invoke(grantee)

    def metric(self, metric_name: str, **props: Any) -> cloudwatch.Metric:
        """An ``AWS/SageMaker`` metric of the deployed endpoint (variant ``AllTraffic``)."""
        return self.fragment.metric(metric_name, **props)

    def metric_invocations(self, **props: Any) -> cloudwatch.Metric:
        return self.fragment.metric_invocations(**props)

    def metric_model_latency(self, **props: Any) -> cloudwatch.Metric:
        return self.fragment.metric_model_latency(**props)

    def metric_invocation_5xx_errors(self, **props: Any) -> cloudwatch.Metric:
        return self.fragment.metric_invocation_5xx_errors(**props)

    def grant_wait(self, grantee: iam.IGrantable) -> iam.Grant:
        """What ``client.fit(..., wait=True)`` calls: start and describe executions, read the
        history (to find the job name), and read the training job's CloudWatch logs."""
        grant = self.state_machine.grant_start_execution(grantee)
        self.state_machine.grant_execution(
            grantee, "states:DescribeExecution", "states:GetExecutionHistory"
        )
        stack = stack_of(self)
        iam.Grant.add_to_principal(
            grantee=grantee,
            actions=["logs:FilterLogEvents", "logs:DescribeLogStreams"],
            resource_arns=[
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    resource_name="/aws/sagemaker/TrainingJobs",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                ),
                stack.format_arn(
                    service="logs",
                    resource="log-group",
                    # FilterLogEvents is authorized on the group (SAR: log-group resource).
                    resource_name="/aws/sagemaker/TrainingJobs:*",
                    arn_format=ArnFormat.COLON_RESOURCE_NAME,
                ),
            ],
        )
        return grant

    @property
    def tasks(self) -> list[sfn.CustomState]:
        """Every service task of the pipeline, for ``add_retry``/``add_catch``."""
        return self.fragment.tasks

    def grant_start_execution(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow starting (and describing) executions of this pipeline."""
        return self.state_machine.grant_start_execution(grantee)
