"""``ChainerEndpoint``: an endpoint config and endpoint for one or more Chainer models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aws_cdk import Annotations, Duration, Names, RemovalPolicy, Resource
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from aws_cdk import aws_sns as sns
from constructs import Construct

from . import _iam
from ._validation import is_unresolved, require, stack_of
from .guardrails import DeploymentGuardrails
from .instance import has_instance_storage, is_gpu_instance, normalize_instance_type
from .model import ChainerModel

__all__ = [
    "AsyncInference",
    "ChainerEndpoint",
    "DataCapture",
    "EndpointVariant",
    "IChainerEndpoint",
    "ServerlessConfig",
]

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
# Construct metadata (in the cloud assembly's manifest) of an async endpoint: its models'
# construct paths and MaxConcurrentInvocationsPerInstance, for local ``invoke-async``.
ASYNC_ENDPOINT_METADATA = "chainer-sagemaker:async-endpoint"


@dataclass(frozen=True, kw_only=True)
class EndpointVariant:
    """One production variant.

    :param model: the model it serves.
    :param variant_name: left out, ``AllTraffic`` for the first variant, ``Variant<n>`` after.
    :param instance_type: left out, the model's ``instance_type``.
    :param initial_instance_count: left out, 1.
    :param initial_weight: traffic share relative to the other variants; left out, 1.
    :param serverless: run the variant on serverless capacity instead of instances (then
        leave ``instance_type`` and ``initial_instance_count`` out).
    """

    model: ChainerModel
    variant_name: str | None = None
    instance_type: str | None = None
    initial_instance_count: int | None = None
    initial_weight: float = 1.0
    serverless: ServerlessConfig | None = None


@dataclass(frozen=True, kw_only=True)
class ServerlessConfig:
    """A serverless variant (``ProductionVariant.ServerlessConfig``).

    Ranges from botocore's SageMaker model (``ProductionVariantServerlessConfig``):
    https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ProductionVariantServerlessConfig.html

    :param memory_size_in_mb: 1024 to 6144 in steps of 1024; left out, 2048.
    :param max_concurrency: concurrent invocations, 1 to 200; left out, 5.
    :param provisioned_concurrency: kept-warm concurrency, 1 to ``max_concurrency``;
        left out, none (cold starts after idle periods).
    """

    memory_size_in_mb: int = 2048
    max_concurrency: int = 5
    provisioned_concurrency: int | None = None

    def validate(self, prop: str = "") -> None:
        """Refuse what SageMaker refuses; ``prop`` prefixes the names in the errors."""
        require(
            self.memory_size_in_mb in range(1024, 6145, 1024),
            f"{prop}memory_size_in_mb",
            self.memory_size_in_mb,
            "use 1024, 2048, 3072, 4096, 5120 or 6144",
        )
        require(
            1 <= self.max_concurrency <= 200,
            f"{prop}max_concurrency",
            self.max_concurrency,
            "use 1 to 200",
        )
        provisioned = self.provisioned_concurrency
        require(
            provisioned is None or 1 <= provisioned <= self.max_concurrency,
            f"{prop}provisioned_concurrency",
            provisioned,
            f"use 1 to max_concurrency ({self.max_concurrency}), or leave it out",
        )


@dataclass(frozen=True, kw_only=True)
class AsyncInference:
    """Asynchronous inference (``AsyncInferenceConfig``): requests and responses in S3.

    The models' roles may read under ``input_prefix`` (SageMaker reads the request object
    with the execution role), write under ``output_prefix`` and ``failure_prefix``, publish to
    the topics and use ``kms_key``, as the prerequisites page lists:
    https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-create-endpoint-prerequisites.html

    :param bucket: holds the requests, the responses and the failures.
    :param input_prefix: where callers upload requests; left out, ``async-input``.
    :param output_prefix: left out, ``async-output``.
    :param failure_prefix: left out, ``async-failures``.
    :param success_topic: SNS topic told of each response; left out, none.
    :param error_topic: SNS topic told of each failure; left out, none.
    :param kms_key: encrypts the responses; left out, the bucket's encryption.
    :param max_concurrent_invocations_per_instance: 1 to 1000; left out, SageMaker's choice.
    """

    bucket: s3.IBucket
    input_prefix: str = "async-input"
    output_prefix: str = "async-output"
    failure_prefix: str = "async-failures"
    success_topic: sns.ITopic | None = None
    error_topic: sns.ITopic | None = None
    kms_key: kms.IKey | None = None
    max_concurrent_invocations_per_instance: int | None = None

    def validate(self, prop: str = "") -> tuple[str, str, str]:
        """Refuse what SageMaker refuses (``prop`` prefixes the names in the errors); the
        input, output and failure prefixes without their slashes."""
        limit = self.max_concurrent_invocations_per_instance
        require(
            limit is None or 1 <= limit <= 1000,
            f"{prop}max_concurrent_invocations_per_instance",
            limit,
            "use 1 to 1000, or leave it out",
        )
        output, failure = (p.strip("/") for p in (self.output_prefix, self.failure_prefix))
        require(
            bool(output) and bool(failure) and output != failure,
            f"{prop}output_prefix/failure_prefix",
            [output, failure],
            "give two distinct, non-empty prefixes",
        )
        return self.input_prefix.strip("/"), output, failure

    def grant_serving(self, principal: iam.IPrincipal) -> None:
        """What a serving model's role needs: read the requests, write the responses and
        failures, use the keys, publish to the topics (the prerequisites page above)."""
        inputs, output, failure = self.validate()
        objects = self.bucket.arn_for_objects
        _iam.add(
            principal,
            _iam.statement(["s3:GetObject"], [objects(f"{inputs}/*")]),
            _iam.statement(
                ["s3:PutObject", "s3:AbortMultipartUpload"],
                [objects(f"{output}/*"), objects(f"{failure}/*")],
            ),
        )
        for key in (self.bucket.encryption_key, self.kms_key):
            if key is not None:
                _iam.key_use(principal, key)
        topics = [t.topic_arn for t in (self.success_topic, self.error_topic) if t]
        if topics:
            _iam.add(principal, _iam.statement(["sns:Publish"], topics))


@dataclass(frozen=True, kw_only=True)
class DataCapture:
    """Capture requests and responses to S3.

    :param bucket: destination; the models' roles may write under ``prefix`` only.
    :param prefix: left out, ``data-capture``.
    :param sampling_percentage: left out, 100.
    :param capture_input: left out, True.
    :param capture_output: left out, True.
    :param kms_key: key for the captured objects; left out, the bucket's encryption.
    """

    bucket: s3.IBucket
    prefix: str = "data-capture"
    sampling_percentage: int = 100
    capture_input: bool = True
    capture_output: bool = True
    kms_key: kms.IKey | None = None


@runtime_checkable
class IChainerEndpoint(Protocol):
    """What callers of an endpoint use: its name and ARN, invoke grants and metrics.

    :class:`ChainerEndpoint` and the importers (``ChainerEndpoint.from_endpoint_name``,
    ``from_endpoint_attributes``) provide it.
    """

    @property
    def endpoint_name(self) -> str: ...

    @property
    def endpoint_arn(self) -> str: ...

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant: ...

    def metric(self, metric_name: str, **props: Any) -> cloudwatch.Metric: ...


class _EndpointBase(Resource):
    """Invoke grants and the endpoint metrics of aws-sagemaker-alpha, for any endpoint."""

    endpoint_name: str
    endpoint_arn: str
    variant_names: list[str]

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow ``sagemaker:InvokeEndpoint`` on this endpoint only."""
        return iam.Grant.add_to_principal(
            grantee=grantee, actions=["sagemaker:InvokeEndpoint"], resource_arns=[self.endpoint_arn]
        )

    def metric(
        self,
        metric_name: str,
        *,
        variant_name: str | None = None,
        namespace: str = "AWS/SageMaker",
        **props: Any,
    ) -> cloudwatch.Metric:
        """Any SageMaker endpoint metric for one variant (left out: the first).

        ``props`` are ``cloudwatch.Metric``'s (``statistic``, ``period``, ``label``, ...).
        """
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=metric_name,
            dimensions_map={
                "EndpointName": self.endpoint_name,
                "VariantName": variant_name or self.variant_names[0],
            },
            **props,
        )

    def _with(self, metric_name: str, statistic: str, namespace: str, props: Any) -> Any:
        props.setdefault("statistic", statistic)
        return self.metric(metric_name, namespace=namespace, **props)

    # Invocation metrics (AWS/SageMaker), as aws-sagemaker-alpha's IEndpointProductionVariant:
    # https://docs.aws.amazon.com/sagemaker/latest/dg/monitoring-cloudwatch.html
    def metric_invocations(self, **props: Any) -> cloudwatch.Metric:
        """Requests per period (sum)."""
        return self._with("Invocations", "Sum", "AWS/SageMaker", props)  # type: ignore[no-any-return]

    def metric_invocations_per_instance(self, **props: Any) -> cloudwatch.Metric:
        """Requests per instance (sum)."""
        return self._with("InvocationsPerInstance", "Sum", "AWS/SageMaker", props)  # type: ignore[no-any-return]

    def metric_invocation_5xx_errors(self, **props: Any) -> cloudwatch.Metric:
        """Server errors per period (sum)."""
        return self._with("Invocation5XXErrors", "Sum", "AWS/SageMaker", props)  # type: ignore[no-any-return]

    def metric_invocation_4xx_errors(self, **props: Any) -> cloudwatch.Metric:
        """Client errors per period (sum)."""
        return self._with("Invocation4XXErrors", "Sum", "AWS/SageMaker", props)  # type: ignore[no-any-return]

    def metric_model_latency(self, **props: Any) -> cloudwatch.Metric:
        """Model latency in microseconds (average)."""
        return self._with("ModelLatency", "Average", "AWS/SageMaker", props)  # type: ignore[no-any-return]

    def metric_overhead_latency(self, **props: Any) -> cloudwatch.Metric:
        """SageMaker's overhead per request in microseconds (average)."""
        return self._with("OverheadLatency", "Average", "AWS/SageMaker", props)  # type: ignore[no-any-return]

    # Instance metrics (/aws/sagemaker/Endpoints), percent.
    def metric_cpu_utilization(self, **props: Any) -> cloudwatch.Metric:
        """CPU utilization of the instances (average; 100% per core)."""
        return self._with("CPUUtilization", "Average", _INSTANCE_NAMESPACE, props)  # type: ignore[no-any-return]

    def metric_memory_utilization(self, **props: Any) -> cloudwatch.Metric:
        """Memory utilization of the instances (average)."""
        return self._with("MemoryUtilization", "Average", _INSTANCE_NAMESPACE, props)  # type: ignore[no-any-return]

    def metric_disk_utilization(self, **props: Any) -> cloudwatch.Metric:
        """Disk space utilization of the instances (average)."""
        return self._with("DiskUtilization", "Average", _INSTANCE_NAMESPACE, props)  # type: ignore[no-any-return]

    def metric_gpu_utilization(self, **props: Any) -> cloudwatch.Metric:
        """GPU utilization of the instances (average; 100% per GPU)."""
        return self._with("GPUUtilization", "Average", _INSTANCE_NAMESPACE, props)  # type: ignore[no-any-return]

    def metric_gpu_memory_utilization(self, **props: Any) -> cloudwatch.Metric:
        """GPU memory utilization of the instances (average)."""
        return self._with("GPUMemoryUtilization", "Average", _INSTANCE_NAMESPACE, props)  # type: ignore[no-any-return]


_INSTANCE_NAMESPACE = "/aws/sagemaker/Endpoints"


class _ImportedEndpoint(_EndpointBase):
    def __init__(self, scope: Construct, id: str, name: str, variant_names: list[str]) -> None:
        super().__init__(scope, id)
        self.endpoint_name = name
        self.endpoint_arn = _iam.sagemaker_arn(self, "endpoint", name)
        self.variant_names = variant_names


class ChainerEndpoint(_EndpointBase):
    """A real-time endpoint (``AWS::SageMaker::EndpointConfig`` + ``AWS::SageMaker::Endpoint``)."""

    @staticmethod
    def from_endpoint_name(scope: Construct, id: str, endpoint_name: str) -> IChainerEndpoint:
        """An existing endpoint (variant ``AllTraffic``): grants and metrics, nothing created."""
        return ChainerEndpoint.from_endpoint_attributes(scope, id, endpoint_name=endpoint_name)

    @staticmethod
    def from_endpoint_attributes(
        scope: Construct,
        id: str,
        *,
        endpoint_name: str,
        variant_names: Sequence[str] = ("AllTraffic",),
    ) -> IChainerEndpoint:
        """An existing endpoint with its variants (the first is the metrics' default)."""
        require(
            is_unresolved(endpoint_name) or bool(_NAME.match(endpoint_name)),
            "endpoint_name",
            endpoint_name,
            "use at most 63 letters, digits and hyphens",
        )
        require(bool(variant_names), "variant_names", [], "give at least one variant name")
        return _ImportedEndpoint(scope, id, endpoint_name, list(variant_names))

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        model: ChainerModel | None = None,
        variants: Sequence[EndpointVariant] | None = None,
        instance_type: str | None = None,
        initial_instance_count: int | None = None,
        serverless: ServerlessConfig | None = None,
        async_inference: AsyncInference | None = None,
        kms_key: kms.IKey | None = None,
        encrypt_storage: bool | None = None,
        data_capture: DataCapture | None = None,
        shadow_variants: Sequence[EndpointVariant] | None = None,
        guardrails: DeploymentGuardrails | None = None,
        endpoint_name: str | None = None,
        removal_policy: RemovalPolicy | None = None,
    ) -> None:
        """Define the endpoint; give ``model`` (one variant) or ``variants``.

        :param model: serve this model as the one variant ``AllTraffic``.
        :param variants: several variants (A/B); instead of ``model``.
        :param instance_type: with ``model``; left out, the model's ``instance_type``.
        :param initial_instance_count: with ``model``; left out, 1.
        :param serverless: with ``model``: a serverless endpoint (no instance type or count,
            no data capture, CPU models without VPC or network isolation, one variant).
        :param async_inference: an asynchronous endpoint (``InvokeEndpointAsync``).
        :param kms_key: encrypts the instances' storage volumes (serverless: the model's
            image SageMaker keeps); left out, a key is created.
        :param encrypt_storage: False leaves ``KmsKeyId`` out, for instance types with local
            NVMe storage (e.g. ml.g5, ml.m5d), which SageMaker encrypts itself; left out, True.
        :param data_capture: left out, no capture.
        :param shadow_variants: one variant that gets a copy of the production variant's
            requests (``ShadowProductionVariants``); its answers are discarded, its metrics
            are its own (``metric_*(variant_name="Shadow")``). Its ``initial_weight``, relative
            to the production variant's, is the share of requests copied. Left out, none.
        :param guardrails: how a stack update of this endpoint (a new endpoint config)
            shifts traffic, and the alarms that roll it back (the endpoint's
            ``DeploymentConfig``); left out, SageMaker's default (blue/green, all at once, no
            rollback alarms).
        :param endpoint_name: left out, CloudFormation generates one (with ``guardrails``,
            one is made from the construct path: the alarms watch the endpoint by name).
        :param removal_policy: for the endpoint, its config and the storage key created here;
            left out, CloudFormation deletes the endpoint and config with the stack (CDK's
            default for these resources), the key is retained.
        """
        super().__init__(scope, id)
        require(
            (model is None) != (variants is None),
            "model/variants",
            "both" if model else "neither",
            "give exactly one of model or variants",
        )
        if model is not None:
            variants = [
                EndpointVariant(
                    model=model,
                    instance_type=instance_type,
                    initial_instance_count=initial_instance_count,
                    serverless=serverless,
                )
            ]
        else:
            for name, value in (
                ("instance_type", instance_type),
                ("initial_instance_count", initial_instance_count),
                ("serverless", serverless),
            ):
                require(value is None, name, value, f"set {name} on each EndpointVariant")
        assert variants is not None
        require(len(variants) >= 1, "variants", [], "give at least one EndpointVariant")
        shadows = list(shadow_variants or [])
        self.serverless = any(v.serverless is not None for v in [*variants, *shadows])
        self._check_combinations(variants, async_inference, data_capture)
        self._check_shadow(variants, shadows, async_inference)
        if guardrails is not None:
            guardrails.validate()
            self._check_guardrails(guardrails, variants)
        if encrypt_storage is None:
            encrypt_storage = True
        require(
            endpoint_name is None
            or is_unresolved(endpoint_name)
            or bool(_NAME.match(endpoint_name)),
            "endpoint_name",
            endpoint_name,
            "use at most 63 letters, digits and hyphens",
        )
        self.variants = list(variants)
        self.variant_names = [
            v.variant_name or ("AllTraffic" if i == 0 else f"Variant{i + 1}")
            for i, v in enumerate(self.variants)
        ]
        self.shadow_variants = shadows
        self.shadow_variant_names = [v.variant_name or "Shadow" for v in shadows]
        names = [*self.variant_names, *self.shadow_variant_names]
        require(
            len(set(names)) == len(names),
            "variants",
            names,
            "give each variant (shadow variants included) a distinct variant_name",
        )
        rendered = [
            self._variant(name, v)
            for name, v in zip(self.variant_names, self.variants, strict=True)
        ]
        rendered_shadows = [
            self._variant(name, v)
            for name, v in zip(self.shadow_variant_names, shadows, strict=True)
        ]
        self.kms_key: kms.IKey | None = None
        if encrypt_storage:
            for prop in [*rendered, *rendered_shadows]:
                if prop.instance_type is None:  # serverless: no instance storage
                    continue
                kind = str(prop.instance_type)
                require(
                    not has_instance_storage(kind),
                    "encrypt_storage",
                    True,
                    f"{kind} has local NVMe storage, which SageMaker encrypts "
                    "and which rejects KmsKeyId: set encrypt_storage=False",
                )
            self.kms_key = kms_key or kms.Key(
                self,
                "StorageKey",
                enable_key_rotation=True,
                description=(
                    "SageMaker serverless endpoint (the model's image)"
                    if self.serverless
                    else "SageMaker endpoint storage volumes"
                ),
            )
        else:
            require(kms_key is None, "kms_key", "given", "set encrypt_storage=True or leave it out")
        self.config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=rendered,
            shadow_production_variants=rendered_shadows or None,
            kms_key_id=self.kms_key.key_arn if self.kms_key else None,
            data_capture_config=self._data_capture(data_capture),
            async_inference_config=self._async_inference(async_inference),
        )
        self.async_inference = async_inference
        if async_inference is not None:
            self.node.add_metadata(
                ASYNC_ENDPOINT_METADATA,
                {
                    "modelPaths": [v.model.node.path for v in self.variants],
                    "maxConcurrentInvocationsPerInstance": (
                        async_inference.max_concurrent_invocations_per_instance
                    ),
                },
            )
        if guardrails is not None and endpoint_name is None:
            # The rollback alarms watch the endpoint by name and the endpoint's
            # DeploymentConfig names the alarms: with CloudFormation's generated name that
            # would be a reference each way (a cycle). A name from the construct path (stack
            # name included, so unique per stack) lets the alarms exist before the endpoint.
            endpoint_name = Names.unique_resource_name(self, max_length=63, separator="-")
        # The config references each model (GetAtt), and each model waits for its role's
        # policies: no further DependsOn (cfn-lint W3005).
        self.resource = sagemaker.CfnEndpoint(
            self,
            "Endpoint",
            endpoint_config_name=self.config.attr_endpoint_config_name,
            endpoint_name=endpoint_name,
        )
        self.endpoint_name = (
            endpoint_name if endpoint_name is not None else self.resource.attr_endpoint_name
        )
        # Ref of AWS::SageMaker::Endpoint is its ARN, which SageMaker writes in lower case
        # whatever the case of the name.
        self.endpoint_arn = self.resource.ref
        self.guardrails = guardrails
        self.rollback_alarms: list[cloudwatch.IAlarm] = []
        if guardrails is not None:
            # CloudFormation passes DeploymentConfig to UpdateEndpoint when a stack update
            # brings a new endpoint config; a rollback fails that update (and the stack
            # update rolls back), the endpoint keeps serving the old config:
            # https://docs.aws.amazon.com/AWSCloudFormation/latest/TemplateReference/aws-resource-sagemaker-endpoint.html
            self.rollback_alarms = guardrails.create_alarms(
                self,
                self.metric_invocation_5xx_errors(),
                self.metric_model_latency(),
                rolls_back="the endpoint's update",
            )
            self.resource.add_property_override(
                "DeploymentConfig",
                guardrails.deployment_config([a.alarm_name for a in self.rollback_alarms]),
            )
        if removal_policy is not None:
            self.apply_removal_policy(removal_policy)

    @staticmethod
    def _check_combinations(
        variants: Sequence[EndpointVariant],
        async_inference: AsyncInference | None,
        data_capture: DataCapture | None,
    ) -> None:
        """Refuse at synth what CreateEndpointConfig refuses at deploy time.

        Serverless endpoints leave out GPUs, VPC configuration, network isolation, data
        capture, several variants and async inference ("Feature exclusions"):
        https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints.html
        A KMS key is not excluded: ``KmsKeyId`` is optional on a serverless endpoint config,
        SageMaker encrypts the model's image with it:
        https://docs.aws.amazon.com/sagemaker/latest/dg/serverless-endpoints-create-config.html
        """
        serverless = [v for v in variants if v.serverless is not None]
        if not serverless:
            return
        fix = "leave it out with serverless, or use instances (no serverless)"
        require(len(variants) == 1, "variants", len(variants), "serverless: use one variant")
        require(async_inference is None, "async_inference", "given", fix)
        require(data_capture is None, "data_capture", "given", fix)
        for v in serverless:
            model = v.model
            require(
                not model.enable_network_isolation and model.network.vpc is None,
                "model",
                "enable_network_isolation" if model.enable_network_isolation else "vpc",
                "serverless endpoints run without VPC configuration and network isolation: "
                "leave them out of the model, or use instances (no serverless)",
            )
            require(v.instance_type is None, "instance_type", v.instance_type, fix)
            require(
                v.initial_instance_count is None,
                "initial_instance_count",
                v.initial_instance_count,
                fix,
            )
            require(
                not is_gpu_instance(v.model.instance_type),
                "model.instance_type",
                v.model.instance_type,
                "serverless endpoints run on CPUs: give the model a CPU instance_type",
            )

    @staticmethod
    def _check_shadow(
        variants: Sequence[EndpointVariant],
        shadows: Sequence[EndpointVariant],
        async_inference: AsyncInference | None,
    ) -> None:
        """Refuse what CreateEndpointConfig refuses with ``ShadowProductionVariants``.

        One shadow variant and then one production variant (botocore's model of
        CreateEndpointConfig, and
        https://docs.aws.amazon.com/sagemaker/latest/dg/shadow-tests-create.html); no
        serverless or asynchronous inference ("Exclusions"):
        https://docs.aws.amazon.com/sagemaker/latest/dg/shadow-tests-exclusions.html
        """
        if not shadows:
            return
        require(
            len(shadows) == 1,
            "shadow_variants",
            len(shadows),
            "give one shadow variant: SageMaker allows one per endpoint",
        )
        require(
            len(variants) == 1,
            "variants",
            len(variants),
            "with a shadow variant, give one production variant (model=...)",
        )
        fix = "shadow variants run on instances: leave {} out, or the shadow variant"
        require(async_inference is None, "async_inference", "given", fix.format("it"))
        for v in [*variants, *shadows]:
            require(v.serverless is None, "serverless", "given", fix.format("serverless"))
        require(
            shadows[0].initial_weight > 0,
            "shadow_variants.initial_weight",
            shadows[0].initial_weight,
            "use a positive weight (relative to the production variant's: the share copied)",
        )

    @staticmethod
    def _check_guardrails(
        guardrails: DeploymentGuardrails, variants: Sequence[EndpointVariant]
    ) -> None:
        """Refuse guardrails that SageMaker would refuse or silently ignore ("Exclusions").

        Rolling updates leave out serverless and multi-variant endpoints; on Inf1
        instances SageMaker falls back to all at once with no baking, so the guardrails
        would do nothing:
        https://docs.aws.amazon.com/sagemaker/latest/dg/deployment-guardrails-exclusions.html
        """
        for v in variants:
            kind = v.instance_type or v.model.instance_type
            require(
                not kind.startswith("ml.inf1."),
                "guardrails",
                kind,
                "SageMaker ignores deployment guardrails on Inf1 instances (all at once, no "
                "rollback): leave guardrails out, or use another instance type",
            )
        if not guardrails.rolling:
            return
        require(
            len(variants) == 1,
            "guardrails.traffic",
            "ROLLING",
            "rolling updates take one variant: use CANARY, LINEAR or ALL_AT_ONCE",
        )
        (variant,) = variants
        count = 1 if variant.initial_instance_count is None else variant.initial_instance_count
        guardrails.validate_for(
            instance_count=None if is_unresolved(count) else count,
            serverless=variant.serverless is not None,
        )

    def grant_invoke(self, grantee: iam.IGrantable) -> iam.Grant:
        """Allow invoking this endpoint only; an async one also through S3.

        For an async endpoint: ``sagemaker:InvokeEndpointAsync``, writing requests under the
        input prefix and reading the output and failure objects (what ``AsyncPredictor`` does):
        https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html
        """
        config = self.async_inference
        if config is None:
            return super().grant_invoke(grantee)
        objects = config.bucket.arn_for_objects
        keys = [k.key_arn for k in (config.bucket.encryption_key, config.kms_key) if k]
        return _iam.grant(
            grantee,
            _iam.statement(
                ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointAsync"], [self.endpoint_arn]
            ),
            _iam.statement(["s3:PutObject"], [objects(f"{config.input_prefix.strip('/')}/*")]),
            _iam.statement(
                ["s3:GetObject"],
                [
                    objects(f"{p.strip('/')}/*")
                    for p in (config.output_prefix, config.failure_prefix)
                ],
            ),
            *([_iam.statement(_iam.KMS_ENCRYPT_DECRYPT, keys)] if keys else []),
        )

    def apply_removal_policy(self, policy: RemovalPolicy) -> None:
        """Apply ``policy`` to the endpoint, its config and the storage key created here."""
        self.resource.apply_removal_policy(policy)
        self.config.apply_removal_policy(policy)
        key = self.node.try_find_child("StorageKey")
        if key is not None:
            key.apply_removal_policy(policy)  # type: ignore[attr-defined]

    def _variant(
        self, name: str, variant: EndpointVariant
    ) -> sagemaker.CfnEndpointConfig.ProductionVariantProperty:
        if variant.serverless is not None:
            return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
                variant_name=name,
                model_name=variant.model.model_name,
                initial_variant_weight=variant.initial_weight,
                serverless_config=self._serverless(variant.serverless),
            )
        instance_count = (
            1 if variant.initial_instance_count is None else variant.initial_instance_count
        )
        instance_type = normalize_instance_type(
            variant.instance_type or variant.model.instance_type, "instance_type"
        )
        if is_gpu_instance(instance_type) != is_gpu_instance(variant.model.instance_type):
            Annotations.of(self).add_warning_v2(
                "chainer-sagemaker-cdk:image-variant",
                f"variant {name} runs on {instance_type}, but its model's image was chosen for "
                f"{variant.model.instance_type}: set the model's instance_type to match",
            )
        require(
            is_unresolved(instance_count) or instance_count >= 1,
            "initial_instance_count",
            instance_count,
            "use 1 or more",
        )
        require(
            variant.initial_weight >= 0, "initial_weight", variant.initial_weight, "use 0 or more"
        )
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=name,
            model_name=variant.model.model_name,
            instance_type=instance_type,
            initial_instance_count=instance_count,
            initial_variant_weight=variant.initial_weight,
        )

    @staticmethod
    def _serverless(
        config: ServerlessConfig,
    ) -> sagemaker.CfnEndpointConfig.ServerlessConfigProperty:
        config.validate()
        memory, provisioned = config.memory_size_in_mb, config.provisioned_concurrency
        return sagemaker.CfnEndpointConfig.ServerlessConfigProperty(
            memory_size_in_mb=memory,
            max_concurrency=config.max_concurrency,
            provisioned_concurrency=provisioned,
        )

    def _async_inference(
        self, config: AsyncInference | None
    ) -> sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty | None:
        if config is None:
            return None
        limit = config.max_concurrent_invocations_per_instance
        prefixes = config.validate()[1:]
        for v in self.variants:
            config.grant_serving(v.model.grant_principal)
        notification = None
        if config.success_topic or config.error_topic:
            notification = sagemaker.CfnEndpointConfig.AsyncInferenceNotificationConfigProperty(
                success_topic=config.success_topic.topic_arn if config.success_topic else None,
                error_topic=config.error_topic.topic_arn if config.error_topic else None,
            )
        return sagemaker.CfnEndpointConfig.AsyncInferenceConfigProperty(
            output_config=sagemaker.CfnEndpointConfig.AsyncInferenceOutputConfigProperty(
                s3_output_path=config.bucket.s3_url_for_object(prefixes[0]),
                s3_failure_path=config.bucket.s3_url_for_object(prefixes[1]),
                kms_key_id=config.kms_key.key_arn if config.kms_key else None,
                notification_config=notification,
            ),
            client_config=(
                sagemaker.CfnEndpointConfig.AsyncInferenceClientConfigProperty(
                    max_concurrent_invocations_per_instance=limit
                )
                if limit is not None
                else None
            ),
        )

    def _data_capture(
        self, capture: DataCapture | None
    ) -> sagemaker.CfnEndpointConfig.DataCaptureConfigProperty | None:
        if capture is None:
            return None
        require(
            0 <= capture.sampling_percentage <= 100,
            "sampling_percentage",
            capture.sampling_percentage,
            "use 0 to 100",
        )
        require(
            capture.capture_input or capture.capture_output,
            "capture_input/capture_output",
            False,
            "capture at least one of input or output",
        )
        for v in [*self.variants, *self.shadow_variants]:
            _iam.bucket_prefix_write(v.model.grant_principal, capture.bucket, capture.prefix)
            if capture.kms_key is not None:
                _iam.key_use(v.model.grant_principal, capture.kms_key)
        modes = [
            {"capture_mode": m}
            for m, on in (("Input", capture.capture_input), ("Output", capture.capture_output))
            if on
        ]
        return sagemaker.CfnEndpointConfig.DataCaptureConfigProperty(
            capture_options=[sagemaker.CfnEndpointConfig.CaptureOptionProperty(**m) for m in modes],
            destination_s3_uri=capture.bucket.s3_url_for_object(capture.prefix.strip("/")),
            initial_sampling_percentage=capture.sampling_percentage,
            enable_capture=True,
            kms_key_id=capture.kms_key.key_arn if capture.kms_key else None,
        )

    # -- API --------------------------------------------------------------------------------
    def scale_on_invocations(
        self,
        *,
        max_capacity: int,
        invocations_per_instance: int,
        min_capacity: int = 1,
        variant_name: str | None = None,
        scale_in_cooldown: Duration | None = None,
        scale_out_cooldown: Duration | None = None,
    ) -> appscaling.ScalableTarget:
        """Target-track ``SageMakerVariantInvocationsPerInstance`` (invocations per minute).

        :param variant_name: left out, the first variant.
        """
        name = self._scalable_variant(variant_name)
        require(
            1 <= min_capacity <= max_capacity,
            "min_capacity/max_capacity",
            (min_capacity, max_capacity),
            "use 1 <= min_capacity <= max_capacity",
        )
        require(
            invocations_per_instance >= 1,
            "invocations_per_instance",
            invocations_per_instance,
            "use 1 or more invocations per minute",
        )
        target = self._scalable_target(name, min_capacity, max_capacity)
        target.scale_to_track_metric(
            "Invocations",
            target_value=invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )
        return target

    def scale_on_backlog(
        self,
        *,
        max_capacity: int,
        backlog_per_instance: float,
        min_capacity: int = 0,
        scale_in_cooldown: Duration | None = None,
        scale_out_cooldown: Duration | None = None,
    ) -> appscaling.ScalableTarget:
        """An async endpoint: target-track ``ApproximateBacklogSizePerInstance``, down to zero.

        With ``min_capacity=0`` a step policy on ``HasBacklogWithoutCapacity`` starts the first
        instance (target tracking cannot scale out from zero instances), as
        https://docs.aws.amazon.com/sagemaker/latest/dg/async-inference-autoscale.html shows.
        """
        require(
            self.async_inference is not None,
            "async_inference",
            None,
            "scale on the backlog of an async endpoint only (give async_inference)",
        )
        name = self._scalable_variant(None)
        require(
            0 <= min_capacity <= max_capacity and max_capacity >= 1,
            "min_capacity/max_capacity",
            (min_capacity, max_capacity),
            "use 0 <= min_capacity <= max_capacity, max_capacity >= 1",
        )
        require(
            backlog_per_instance > 0,
            "backlog_per_instance",
            backlog_per_instance,
            "use a positive number of queued requests per instance",
        )
        target = self._scalable_target(name, min_capacity, max_capacity)
        backlog = cloudwatch.Metric(
            namespace="AWS/SageMaker",
            metric_name="ApproximateBacklogSizePerInstance",
            dimensions_map={"EndpointName": self.endpoint_name},
            statistic="Average",
        )
        target.scale_to_track_metric(
            "Backlog",
            target_value=backlog_per_instance,
            custom_metric=backlog,
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )
        if min_capacity == 0:
            target.scale_on_metric(
                "FromZero",
                metric=cloudwatch.Metric(
                    namespace="AWS/SageMaker",
                    metric_name="HasBacklogWithoutCapacity",
                    dimensions_map={"EndpointName": self.endpoint_name},
                    statistic="Average",
                    period=Duration.minutes(1),
                ),
                scaling_steps=[
                    appscaling.ScalingInterval(upper=0.5, change=0),
                    appscaling.ScalingInterval(lower=0.5, change=1),
                ],
                adjustment_type=appscaling.AdjustmentType.CHANGE_IN_CAPACITY,
                cooldown=scale_out_cooldown,
                evaluation_periods=2,
                datapoints_to_alarm=2,
            )
        return target

    def _scalable_variant(self, variant_name: str | None) -> str:
        require(
            not self.serverless,
            "serverless",
            "given",
            "serverless endpoints scale themselves (max_concurrency): no instance autoscaling",
        )
        name = variant_name or self.variant_names[0]
        require(
            name in self.variant_names,
            "variant_name",
            name,
            f"use one of {', '.join(self.variant_names)}",
        )
        return name

    def _scalable_target(
        self, name: str, min_capacity: int, max_capacity: int
    ) -> appscaling.ScalableTarget:
        target = appscaling.ScalableTarget(
            self,
            f"Scaling{name}",
            service_namespace=appscaling.ServiceNamespace.SAGEMAKER,
            resource_id=f"endpoint/{self.endpoint_name}/variant/{name}",
            scalable_dimension="sagemaker:variant:DesiredInstanceCount",
            min_capacity=min_capacity,
            max_capacity=max_capacity,
            # Application Auto Scaling acts through its service-linked role; without this CDK
            # would add an empty role of its own.
            role=self._scaling_role(),
        )
        if not is_unresolved(self.endpoint_name):
            # A given name is not a reference: wait for the endpoint explicitly. (Otherwise
            # the resource ID's GetAtt orders them; a DependsOn would be redundant, W3005.)
            target.node.add_dependency(self.resource)
        # An update of the stack (a new config) would otherwise reset the instance counts
        # that autoscaling set back to the config's InitialInstanceCount:
        # https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-sagemaker-endpoint.html
        self.resource.retain_all_variant_properties = True
        return target

    def _scaling_role(self) -> iam.IRole:
        existing = self.node.try_find_child("ScalingRole")
        if existing is not None:
            return existing  # type: ignore[return-value]
        stack = stack_of(self)
        arn = (
            f"arn:{stack.partition}:iam::{stack.account}:role/aws-service-role/"
            "sagemaker.application-autoscaling.amazonaws.com/"
            "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
        )
        return iam.Role.from_role_arn(self, "ScalingRole", arn, mutable=False)
