"""``ChainerModel``: a SageMaker model serving a Chainer script from existing model data."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import jsii
from aws_cdk import RemovalPolicy, Resource
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from . import _iam, _metadata, _shapes
from ._network import VpcPlacement
from ._validation import is_unresolved, require, stack_of
from .image import RuntimeImage
from .instance import normalize_instance_type
from .model_data import ModelData
from .source import CodeConfig, SourceCode

if TYPE_CHECKING:
    from aws_cdk import aws_ec2 as ec2

__all__ = ["ChainerModel", "IChainerModel", "model_environment"]

ISOLATED_MODEL_CODE_DIR = "/opt/ml/model/code"
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)


def model_environment(
    *,
    entry_point: str,
    submit_directory: str,
    region: str,
    container_log_level: int = logging.INFO,
    model_server_workers: int | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The container environment of a Chainer model (docs/contract.md §3.1), as the SDK sets it."""
    env = {
        "SAGEMAKER_PROGRAM": entry_point,
        "SAGEMAKER_SUBMIT_DIRECTORY": submit_directory,
        "SAGEMAKER_CONTAINER_LOG_LEVEL": str(container_log_level),
        "SAGEMAKER_REGION": region,
        "SAGEMAKER_ENABLE_CLOUDWATCH_METRICS": "false",
    }
    if model_server_workers is not None:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(model_server_workers)
    env.update(environment or {})
    return env


@runtime_checkable
class IChainerModel(Protocol):
    """A SageMaker model an endpoint can serve: its name and ARN.

    :class:`ChainerModel` and its importers (``from_model_name``, ``from_model_attributes``)
    provide it.
    """

    @property
    def model_name(self) -> str: ...

    @property
    def model_arn(self) -> str: ...


class _ImportedModel(Resource):
    def __init__(
        self, scope: Construct, id: str, name: str, role: iam.IRole | None, instance_type: str
    ) -> None:
        super().__init__(scope, id)
        self.model_name = name
        self.model_arn = _iam.sagemaker_arn(self, "model", name)
        self.role = role
        self.instance_type = normalize_instance_type(instance_type)


@jsii.implements(iam.IGrantable)
class ChainerModel(Resource):
    """A SageMaker model: model data + code + image + environment (``AWS::SageMaker::Model``).

    An ``iam.IGrantable``: ``key.grant_decrypt(model)`` lets its containers use the key.
    """

    @staticmethod
    def from_model_name(scope: Construct, id: str, model_name: str) -> IChainerModel:
        """An existing model, by name (nothing is created)."""
        return ChainerModel.from_model_attributes(scope, id, model_name=model_name)

    @staticmethod
    def from_model_attributes(
        scope: Construct,
        id: str,
        *,
        model_name: str,
        role: iam.IRole | None = None,
        instance_type: str = "ml.m5.large",
    ) -> IChainerModel:
        """An existing model with its execution role (for grants) and its instance type."""
        require(
            is_unresolved(model_name) or bool(_NAME.match(model_name)),
            "model_name",
            model_name,
            "use at most 63 letters, digits and hyphens",
        )
        return _ImportedModel(scope, id, model_name, role, instance_type)

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        model_data: ModelData,
        code: SourceCode,
        instance_type: str = "ml.m5.large",
        image: RuntimeImage | None = None,
        role: iam.IRole | None = None,
        environment: Mapping[str, str] | None = None,
        model_server_workers: int | None = None,
        container_log_level: int = logging.INFO,
        model_name: str | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        enable_network_isolation: bool = False,
        removal_policy: RemovalPolicy | None = None,
    ) -> None:
        """Define the model.

        :param model_data: the trained ``model.tar.gz`` (``ModelData.from_*``).
        :param code: the serving script with ``model_fn`` (``SourceCode.from_directory``).
        :param instance_type: the instance type it will be served on; selects the image variant
            and is the endpoint's default. Left out, ``ml.m5.large``.
        :param image: left out, ``RuntimeImage.from_asset()``.
        :param role: execution role; left out, one is created with only what the model uses.
        :param environment: extra container variables (override the SAGEMAKER_* defaults);
            left out, none.
        :param model_server_workers: ``SAGEMAKER_MODEL_SERVER_WORKERS``; left out, one per CPU.
        :param container_log_level: left out, ``logging.INFO``.
        :param model_name: left out, CloudFormation generates one.
        :param vpc: left out, SageMaker's network.
        :param vpc_subnets: left out, the VPC's private subnets.
        :param security_groups: left out with a VPC, one is created.
        :param enable_network_isolation: left out, off.
        :param removal_policy: for the model resource; left out, deleted with the stack.
        """
        super().__init__(scope, id)
        self.instance_type = normalize_instance_type(instance_type)
        self.enable_network_isolation = enable_network_isolation
        require(
            model_server_workers is None
            or is_unresolved(model_server_workers)
            or model_server_workers >= 1,
            "model_server_workers",
            model_server_workers,
            "use 1 or more, or leave it out (one worker per CPU)",
        )
        require(
            container_log_level in _LOG_LEVELS,
            "container_log_level",
            container_log_level,
            "use a logging level such as logging.INFO (20)",
        )
        require(
            model_name is None or is_unresolved(model_name) or bool(_NAME.match(model_name)),
            "model_name",
            model_name,
            "use at most 63 letters, digits and hyphens",
        )
        self.role = role or iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal(_iam.SAGEMAKER),
            description="SageMaker execution role of a Chainer model",
        )
        self.principal = _iam.PolicyPrincipal.for_role(self, "ExecutionPolicy", self.role)
        _iam.sagemaker_logs_and_metrics(self, self.grant_principal, "Endpoints")
        if enable_network_isolation:
            # No network: the code travels inside model.tar.gz (as the SageMaker SDK repacks it).
            data_config = model_data.bind_with_code(self, self.grant_principal, code)
            code_config = CodeConfig(ISOLATED_MODEL_CODE_DIR, code.entry_point)
        else:
            code_config = code.bind(self, self.grant_principal)
            data_config = model_data.bind(self, self.grant_principal)
        image_config = (image or RuntimeImage.from_asset()).bind(
            self, self.grant_principal, self.instance_type
        )
        self.network = VpcPlacement(
            self, vpc, vpc_subnets, security_groups, "Chainer model containers"
        )
        self.network.grant(self, self.grant_principal)
        self.environment = model_environment(
            entry_point=code_config.entry_point,
            submit_directory=code_config.s3_url,
            region=stack_of(self).region,
            container_log_level=container_log_level,
            model_server_workers=model_server_workers,
            environment=environment,
        )
        _shapes.validate_request(
            "CreateModel",
            {"PrimaryContainer": {"Environment": self.environment}},
            lambda path: "environment",
        )
        container: dict[str, Any] = {
            "image": image_config.image_uri,
            "model_data_url": data_config.s3_url,
            "environment": self.environment,
        }
        vpc_config = self.network.render()
        self.resource = sagemaker.CfnModel(
            self,
            "Model",
            execution_role_arn=self.role.role_arn,
            primary_container=sagemaker.CfnModel.ContainerDefinitionProperty(**container),
            model_name=model_name,
            enable_network_isolation=enable_network_isolation or None,
            vpc_config=sagemaker.CfnModel.VpcConfigProperty(
                security_group_ids=vpc_config["SecurityGroupIds"], subnets=vpc_config["Subnets"]
            )
            if vpc_config
            else None,
        )
        # The role's policy must exist before SageMaker checks the model's access.
        self.resource.node.add_dependency(self.principal.policy)
        if removal_policy is not None:
            self.resource.apply_removal_policy(removal_policy)
        _metadata.record_model(
            self,
            environment=self.environment,
            code_asset_hash=code_config.asset_hash,
            model_data_asset_hash=data_config.asset_hash,
        )
        # GetAtt even for a given name: an endpoint config then waits for the model.
        self.model_name = self.resource.attr_model_name
        # Ref of AWS::SageMaker::Model is its ARN.
        self.model_arn = self.resource.ref
        self.model_data_url = data_config.s3_url

    @property
    def grant_principal(self) -> iam.IPrincipal:
        """The execution role's principal (``iam.IGrantable``)."""
        return self.principal  # type: ignore[return-value]

    def apply_removal_policy(self, policy: RemovalPolicy) -> None:
        """Apply ``policy`` to the model resource."""
        self.resource.apply_removal_policy(policy)

    @classmethod
    def from_training_job(
        cls, scope: Construct, id: str, *, training_job_name: str, code: SourceCode, **props: Any
    ) -> ChainerModel:
        """Attach: a model from a finished training job's artifacts (looked up at deploy time).

        ``props`` are those of :class:`ChainerModel` (``instance_type``, ``image``, ...).
        """
        return cls(
            scope, id, model_data=ModelData.from_training_job(training_job_name), code=code, **props
        )

    def grant_key(self, key: kms.IKey) -> iam.Grant:
        """Let the model's role use ``key`` (e.g. the bucket key of the model data)."""
        return _iam.grant(self, *_iam.key_use_statements(key))
