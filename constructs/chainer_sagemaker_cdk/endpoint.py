"""``ChainerEndpoint``: an endpoint config and endpoint for one or more Chainer models."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aws_cdk import Annotations, Duration, RemovalPolicy, Resource
from aws_cdk import aws_applicationautoscaling as appscaling
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from . import _iam
from ._validation import is_unresolved, require, stack_of
from .instance import has_instance_storage, is_gpu_instance, normalize_instance_type
from .model import ChainerModel

__all__ = ["ChainerEndpoint", "DataCapture", "EndpointVariant", "IChainerEndpoint"]

_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


@dataclass(frozen=True, kw_only=True)
class EndpointVariant:
    """One production variant.

    :param model: the model it serves.
    :param variant_name: left out, ``AllTraffic`` for the first variant, ``Variant<n>`` after.
    :param instance_type: left out, the model's ``instance_type``.
    :param initial_instance_count: left out, 1.
    :param initial_weight: traffic share relative to the other variants; left out, 1.
    """

    model: ChainerModel
    variant_name: str | None = None
    instance_type: str | None = None
    initial_instance_count: int = 1
    initial_weight: float = 1.0


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
        initial_instance_count: int = 1,
        kms_key: kms.IKey | None = None,
        encrypt_storage: bool = True,
        data_capture: DataCapture | None = None,
        endpoint_name: str | None = None,
        removal_policy: RemovalPolicy | None = None,
    ) -> None:
        """Define the endpoint; give ``model`` (one variant) or ``variants``.

        :param model: serve this model as the one variant ``AllTraffic``.
        :param variants: several variants (A/B); instead of ``model``.
        :param instance_type: with ``model``; left out, the model's ``instance_type``.
        :param initial_instance_count: with ``model``; left out, 1.
        :param kms_key: encrypts the instances' storage volumes; left out, a key is created.
        :param encrypt_storage: False leaves ``KmsKeyId`` out, for instance types with local
            NVMe storage (e.g. ml.g5, ml.m5d), which SageMaker encrypts itself; left out, True.
        :param data_capture: left out, no capture.
        :param endpoint_name: left out, CloudFormation generates one.
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
                )
            ]
        else:
            require(
                instance_type is None,
                "instance_type",
                instance_type,
                "set instance_type on each EndpointVariant",
            )
        assert variants is not None
        require(len(variants) >= 1, "variants", [], "give at least one EndpointVariant")
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
        require(
            len(set(self.variant_names)) == len(self.variant_names),
            "variants",
            self.variant_names,
            "give each variant a distinct variant_name",
        )
        rendered = [
            self._variant(name, v)
            for name, v in zip(self.variant_names, self.variants, strict=True)
        ]
        self.kms_key: kms.IKey | None = None
        if encrypt_storage:
            for prop in rendered:
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
                description="SageMaker endpoint storage volumes",
            )
        else:
            require(kms_key is None, "kms_key", "given", "set encrypt_storage=True or leave it out")
        self.config = sagemaker.CfnEndpointConfig(
            self,
            "EndpointConfig",
            production_variants=rendered,
            kms_key_id=self.kms_key.key_arn if self.kms_key else None,
            data_capture_config=self._data_capture(data_capture),
        )
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
        if removal_policy is not None:
            self.apply_removal_policy(removal_policy)

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
            is_unresolved(variant.initial_instance_count) or variant.initial_instance_count >= 1,
            "initial_instance_count",
            variant.initial_instance_count,
            "use 1 or more",
        )
        require(
            variant.initial_weight >= 0, "initial_weight", variant.initial_weight, "use 0 or more"
        )
        return sagemaker.CfnEndpointConfig.ProductionVariantProperty(
            variant_name=name,
            model_name=variant.model.model_name,
            instance_type=instance_type,
            initial_instance_count=variant.initial_instance_count,
            initial_variant_weight=variant.initial_weight,
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
        for v in self.variants:
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
        name = variant_name or self.variant_names[0]
        require(
            name in self.variant_names,
            "variant_name",
            name,
            f"use one of {', '.join(self.variant_names)}",
        )
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
        target.scale_to_track_metric(
            "Invocations",
            target_value=invocations_per_instance,
            predefined_metric=appscaling.PredefinedMetric.SAGEMAKER_VARIANT_INVOCATIONS_PER_INSTANCE,
            scale_in_cooldown=scale_in_cooldown,
            scale_out_cooldown=scale_out_cooldown,
        )
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
