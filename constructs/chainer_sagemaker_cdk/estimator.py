"""``ChainerEstimator``: a SageMaker training job definition for a Chainer script."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import jsii
from aws_cdk import Annotations, Duration, RemovalPolicy, Resource, Size
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from . import _estimator_checks, _iam, _metadata, _shapes
from ._estimator_checks import CODE_CHANNEL, default_job_prefix
from ._network import VpcPlacement
from ._validation import is_unresolved, stack_of
from .hyperparameters import (
    MpiOptions,
    encode_hyperparameters,
    reserved_hyperparameters,
)
from .image import ImageConfig, RuntimeImage
from .instance import gpu_count, normalize_instance_type
from .source import CodeConfig, SourceCode
from .training_input import InputMode, TrainingInput

if TYPE_CHECKING:
    from aws_cdk import aws_ec2 as ec2

__all__ = ["ChainerEstimator"]

ISOLATED_CODE_DIR = f"/opt/ml/input/data/{CODE_CHANNEL}"


# Where a request field comes from, for error messages (longest prefix first).
_PROP_OF = (
    ("AlgorithmSpecification.MetricDefinitions", "metric_definitions"),
    ("StoppingCondition.MaxWaitTimeInSeconds", "max_wait"),
    ("StoppingCondition.MaxRuntimeInSeconds", "max_run"),
    ("ResourceConfig.VolumeSizeInGB", "volume_size"),
    ("ResourceConfig.InstanceCount", "instance_count"),
    ("RetryStrategy", "max_retry_attempts"),
    ("HyperParameters", "hyperparameters"),
    ("InputDataConfig", "channels"),
    ("Environment", "environment"),
    ("Tags", "tags"),
)
_OUTPUT_URL_FIELDS = ("S3OutputPath",)


@jsii.implements(iam.IGrantable)
class ChainerEstimator(Resource):
    """What to train and how: code, image, instances, data, outputs, security.

    It creates the execution role (when none is given), the code asset and the image asset;
    :class:`~chainer_sagemaker_cdk.TrainingPipeline` runs it. ``training_job_request()`` gives
    the CreateTrainingJob parameters for any other runner. It is an ``iam.IGrantable``:
    ``bucket.grant_read(estimator)`` lets its jobs read the bucket.
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        code: SourceCode,
        instance_type: str = "ml.m5.xlarge",
        instance_count: int = 1,
        hyperparameters: Mapping[str, Any] | None = None,
        channels: Mapping[str, TrainingInput] | None = None,
        input_mode: InputMode = InputMode.FILE,
        image: RuntimeImage | None = None,
        role: iam.IRole | None = None,
        output_bucket: s3.IBucket | None = None,
        output_prefix: str = "models",
        output_kms_key: kms.IKey | None = None,
        volume_size: Size | None = None,
        volume_kms_key: kms.IKey | None = None,
        max_run: Duration | None = None,
        use_spot_instances: bool = False,
        max_wait: Duration | None = None,
        checkpoint_bucket: s3.IBucket | None = None,
        checkpoint_prefix: str = "checkpoints",
        checkpoint_local_path: str | None = None,
        base_job_name: str | None = None,
        vpc: ec2.IVpc | None = None,
        vpc_subnets: ec2.SubnetSelection | None = None,
        security_groups: Sequence[ec2.ISecurityGroup] | None = None,
        encrypt_inter_container_traffic: bool = False,
        enable_network_isolation: bool = False,
        metric_definitions: Mapping[str, str] | None = None,
        environment: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        container_log_level: int = logging.INFO,
        use_mpi: bool | None = None,
        num_processes: int | None = None,
        process_slots_per_host: int | None = None,
        additional_mpi_options: str | None = None,
        max_retry_attempts: int | None = None,
        extra_request_fields: Mapping[str, Any] | None = None,
        removal_policy: RemovalPolicy | None = None,
    ) -> None:
        """Define the training job.

        :param code: the script (``SourceCode.from_directory(dir, "train.py")``).
        :param instance_type: ``ml.*`` type (``p3.2xlarge`` is accepted too); left out,
            ``ml.m5.xlarge``. ``g*``/``p*`` families select the GPU image variant.
        :param instance_count: hosts; left out, 1. More than one host runs MPI (ChainerMN).
        :param hyperparameters: passed to the script as ``--key value``; JSON-encoded as the
            SageMaker Python SDK does. Left out, none.
        :param channels: channel name -> :class:`TrainingInput`; left out, no channels.
        :param input_mode: left out, ``File``.
        :param image: left out, ``RuntimeImage.from_asset()`` (this project's runtime).
        :param role: execution role; left out, one is created with only what this job uses.
        :param output_bucket: where ``model.tar.gz`` goes; left out, a bucket is created
            (KMS-encrypted, versioned, TLS only, public access blocked, retained).
        :param output_prefix: key prefix in ``output_bucket``; left out, ``models``.
        :param output_kms_key: key for the output artifacts; left out, the output bucket's KMS
            key when it has one (sent as ``KmsKeyId``: SageMaker would otherwise use the
            account's default S3 key), else the bucket's default encryption.
        :param volume_size: ML storage per instance; left out, 30 GiB.
        :param volume_kms_key: key for the ML storage volume; left out, AWS-managed encryption.
            Refused for types with local NVMe storage (g4dn, g5, g6, p3dn, p4d, p5, trn1, ...),
            which SageMaker encrypts itself and where it rejects ``VolumeKmsKeyId``.
        :param max_run: stop the job after this; left out, 24 hours (at most 28 days).
        :param use_spot_instances: managed spot training; left out, on-demand.
        :param max_wait: spot only: the total time including waits for capacity; left out with
            spot, twice ``max_run`` (as long again to wait for capacity). Must be at least
            ``max_run``.
        :param checkpoint_bucket: where ``checkpoint_local_path`` is synced; left out, no
            checkpoints (spot without checkpoints restarts from scratch: a synth warning).
        :param checkpoint_prefix: key prefix for checkpoints; left out, ``checkpoints``.
        :param checkpoint_local_path: left out, ``/opt/ml/checkpoints``.
        :param base_job_name: a pipeline names its runs ``<base_job_name>--<uuid>`` (at most
            25 characters, single hyphens: ``--`` keeps the runs of ``chainer-digits`` apart
            from those of ``chainer-digits-v2``); left out, ``<construct id>-<8 hex digits of
            the construct path>``.
        :param vpc: run in this VPC; left out, SageMaker's network.
        :param vpc_subnets: left out, the VPC's private subnets.
        :param security_groups: left out with a VPC, one is created that lets the hosts of a job
            talk to each other (MPI over SSH).
        :param encrypt_inter_container_traffic: left out, off (as in the SDK).
        :param enable_network_isolation: no network access from the container; left out, off.
        :param metric_definitions: metric name -> regex over the job's logs; left out, none.
        :param environment: extra environment variables for the container; left out, none.
        :param tags: job tags; left out, none.
        :param container_log_level: Python logging level; left out, ``logging.INFO`` (20).
        :param use_mpi: force MPI on/off; left out, on with more than one host.
        :param num_processes: total MPI processes; left out, slots per host times hosts.
        :param process_slots_per_host: left out, the host's GPU count (1 without GPUs).
        :param additional_mpi_options: extra ``mpirun`` options; left out, none.
        :param max_retry_attempts: retries on internal errors; left out, none.
        :param extra_request_fields: further CreateTrainingJob fields, deep-merged into the
            request: objects merge key by key (``{"ResourceConfig": {"KeepAlivePeriodInSeconds":
            600}}`` keeps the props' instance type), None removes a key, other values replace
            what the props set only where the props leave it out. The merged request is checked
            against botocore's SageMaker model; an ``S3OutputPath`` in them (TensorBoard,
            Debugger, Profiler) is granted like the output prefix. Left out, none.
        :param removal_policy: for the artifacts bucket and key this construct creates; left
            out, retained (CDK's default for buckets and keys).
        """
        super().__init__(scope, id)
        self.instance_type = normalize_instance_type(instance_type)
        self.instance_count = instance_count
        self.input_mode = input_mode
        self.channels: dict[str, TrainingInput] = dict(channels or {})
        self.channel_uris = {name: c.s3_uri for name, c in self.channels.items()}
        self.region = stack_of(self).region
        self.volume_size = volume_size or Size.gibibytes(30)
        self.max_run = max_run or Duration.hours(24)
        self.use_spot_instances = use_spot_instances
        self.max_wait = max_wait or (
            self.max_run.plus(self.max_run) if use_spot_instances else None
        )
        self.encrypt_inter_container_traffic = encrypt_inter_container_traffic
        self.enable_network_isolation = enable_network_isolation
        self.metric_definitions = dict(metric_definitions or {})
        self.environment = dict(environment or {})
        self.tags = dict(tags or {})
        self.max_retry_attempts = max_retry_attempts
        self.extra_request_fields = dict(extra_request_fields or {})
        self.output_prefix = output_prefix.strip("/")
        self.output_kms_key = output_kms_key
        self.volume_kms_key = volume_kms_key
        self._removal_policy = removal_policy
        self.checkpoint_local_path = checkpoint_local_path
        self.mpi = MpiOptions(
            use_mpi, num_processes, process_slots_per_host, additional_mpi_options
        )
        _estimator_checks.validate(
            self, hyperparameters or {}, container_log_level, checkpoint_bucket, base_job_name
        )
        self.gpus_per_instance = gpu_count(self.instance_type)
        _estimator_checks.check_extra_fields(self)
        self._warn_about_mpi_slots()
        if use_spot_instances and checkpoint_bucket is None:
            Annotations.of(self).add_warning_v2(
                "chainer-sagemaker-cdk:spot-without-checkpoints",
                "use_spot_instances without checkpoint_bucket: an interrupted spot job starts "
                "over from the first epoch; give checkpoint_bucket and save checkpoints under "
                "/opt/ml/checkpoints",
            )
        self.base_job_name = base_job_name or default_job_prefix(self)

        self.role = role or iam.Role(
            self,
            "ExecutionRole",
            assumed_by=iam.ServicePrincipal(_iam.SAGEMAKER),
            description="SageMaker execution role of a Chainer training job",
        )
        principal = _iam.PolicyPrincipal.for_role(self, "ExecutionPolicy", self.role)
        self.principal = principal
        self._grant_principal: iam.IPrincipal = principal  # type: ignore[assignment]
        with principal.batched():
            self._bind(
                code,
                image,
                output_bucket,
                checkpoint_bucket,
                checkpoint_prefix,
                hyperparameters,
                container_log_level,
                vpc,
                vpc_subnets,
                security_groups,
            )
        _estimator_checks.check_extra_conflicts(
            self._base_request("x" * 63), self.extra_request_fields
        )
        _shapes.validate_request(
            "CreateTrainingJob", self.training_job_request("x" * 63), self._prop_of
        )
        _metadata.record_training_job(
            self,
            hyperparameters={**self.hyperparameters, **self.reserved_hyperparameters(None)},
            instance_count=self.instance_count,
            instance_type=self.instance_type,
            input_mode=self.input_mode.value,
            channels={n: c.describe(self.channel_uris[n]) for n, c in self.channels.items()},
            environment=self.environment,
            code_asset_hash=self.code.asset_hash,
        )

    def _bind(
        self,
        code: SourceCode,
        image: RuntimeImage | None,
        output_bucket: s3.IBucket | None,
        checkpoint_bucket: s3.IBucket | None,
        checkpoint_prefix: str,
        hyperparameters: Mapping[str, Any] | None,
        container_log_level: int,
        vpc: ec2.IVpc | None,
        vpc_subnets: ec2.SubnetSelection | None,
        security_groups: Sequence[ec2.ISecurityGroup] | None,
    ) -> None:
        """Buckets, assets, network and grants (statements collected into one policy call)."""
        self.output_bucket = output_bucket or self._default_bucket()
        self.checkpoint_bucket = checkpoint_bucket
        self.checkpoint_prefix = checkpoint_prefix.strip("/")
        self.source_code = code  # the pipeline binds it again for its serving model's role
        self.code: CodeConfig = code.bind(self, self.grant_principal)
        _estimator_checks.check_isolated_code(self)
        self.image_source = image or RuntimeImage.from_asset()
        self.image: ImageConfig = self.image_source.bind(
            self, self.grant_principal, self.instance_type
        )
        self.hyperparameters = encode_hyperparameters(hyperparameters or {})
        self.container_log_level = container_log_level
        self.network = VpcPlacement(
            self,
            vpc,
            vpc_subnets,
            security_groups,
            "Chainer training hosts: traffic between the hosts of one job (MPI)",
            hosts_talk=is_unresolved(self.instance_count) or self.instance_count > 1,
        )
        self._grant_training()

    @property
    def grant_principal(self) -> iam.IPrincipal:
        """The execution role's principal (``iam.IGrantable``): grants land in its policies."""
        return self._grant_principal

    def _prop_of(self, path: str) -> str:
        for prefix, prop in _PROP_OF:
            if path.startswith(prefix):
                return prop
        return "extra_request_fields"

    def apply_removal_policy(self, policy: RemovalPolicy) -> None:
        """Apply ``policy`` to the artifacts bucket and key this construct created (if any)."""
        for child in ("Artifacts", "ArtifactsKey"):
            found = self.node.try_find_child(child)
            if found is not None:
                found.apply_removal_policy(policy)  # type: ignore[attr-defined]

    # -- validation ---------------------------------------------------------------------------
    def _warn_about_mpi_slots(self) -> None:
        slots = self.mpi.process_slots_per_host
        if (
            self.gpus_per_instance
            and slots
            and not is_unresolved(slots)
            and (slots > self.gpus_per_instance)
        ):
            Annotations.of(self).add_warning_v2(
                "chainer-sagemaker-cdk:mpi-slots",
                f"process_slots_per_host={slots} exceeds the {self.gpus_per_instance} GPU(s) "
                f"of {self.instance_type}: GPU ranks will share devices",
            )

    @property
    def max_instance_hours(self) -> float | None:
        """The most instance-hours one training job is billed: ``max_run`` x ``instance_count``.

        SageMaker stops a job at ``MaxRuntimeInSeconds``, its internal retries included
        (``RetryStrategy``: the stopping condition limits "the training time for the complete
        job"); a spot job is billed for its training time only, never for the waits for
        capacity that ``max_wait`` allows (see :attr:`max_duration`):
        https://docs.aws.amazon.com/sagemaker/latest/dg/model-managed-spot-training.html
        None when ``instance_count`` is a deploy-time value.
        """
        if is_unresolved(self.instance_count):
            return None
        return self.instance_count * self.max_run.to_seconds() / 3600

    @property
    def max_duration(self) -> Duration:
        """The longest a job can take from start to end: ``max_wait`` (spot) or ``max_run``."""
        return self.max_wait or self.max_run

    @property
    def mpi_slots_per_host(self) -> int:
        """MPI processes per host: the prop, else the instance's GPUs (1 without GPUs), as the
        runtime computes it."""
        return self.mpi.process_slots_per_host or max(self.gpus_per_instance, 1)

    @property
    def mpi_num_processes(self) -> int:
        """Total MPI processes: the prop, else slots per host times hosts."""
        return self.mpi.num_processes or self.mpi_slots_per_host * self.instance_count

    # -- resources ------------------------------------------------------------------------------
    def _default_bucket(self) -> s3.IBucket:
        key = self.output_kms_key or kms.Key(
            self,
            "ArtifactsKey",
            enable_key_rotation=True,
            description="Chainer training artifacts (model.tar.gz)",
        )
        bucket = s3.Bucket(
            self,
            "Artifacts",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            enforce_ssl=True,
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            removal_policy=self._removal_policy,
        )
        if self._removal_policy is not None and self.output_kms_key is None:
            key.apply_removal_policy(self._removal_policy)
        return bucket

    def _grant_training(self) -> None:
        principal = self.grant_principal
        _iam.sagemaker_logs_and_metrics(self, principal, "TrainingJobs")
        _iam.bucket_prefix_write(principal, self.output_bucket, self.output_prefix)
        for channel in self.channels.values():
            _iam.bucket_prefix_read(principal, channel.bucket, channel.key_prefix)
        if self.checkpoint_bucket is not None:
            _iam.bucket_prefix_write(principal, self.checkpoint_bucket, self.checkpoint_prefix)
        for key in (self.output_kms_key, self.volume_kms_key):
            if key is not None:
                _iam.key_use(principal, key)
        if self.enable_network_isolation and self.code.bucket_name is not None:
            # The code channel is an S3Prefix data source: SageMaker lists the prefix (the
            # object's key) before it downloads the object.
            bucket_arn = _iam.bucket_arn(self, self.code.bucket_name)
            _iam.add(principal, _iam.list_prefix(bucket_arn, str(self.code.object_key)))
        self._grant_extra_outputs()
        self.network.grant(self, principal)

    def _grant_extra_outputs(self) -> None:
        """Write access for the ``S3OutputPath`` of extra fields (TensorBoard, Debugger, ...)."""

        def walk(value: Any) -> None:
            if isinstance(value, Mapping):
                for key, item in value.items():
                    if key in _OUTPUT_URL_FIELDS and isinstance(item, str):
                        self._grant_url_write(item)
                    else:
                        walk(item)
            elif isinstance(value, (list, tuple)):
                for item in value:
                    walk(item)

        walk(self.extra_request_fields)

    def _grant_url_write(self, url: str) -> None:
        from ._assets import S3_URL

        match = S3_URL.match(url.rstrip("/") + "/") if not is_unresolved(url) else None
        if match is None:
            Annotations.of(self).add_warning_v2(
                "chainer-sagemaker-cdk:extra-output-url",
                f"{url}: not an s3:// URL known at synth; grant the execution role write "
                "access to it yourself (estimator.grant_principal)",
            )
            return
        bucket_name, prefix = match.group(1), match.group(2)
        bucket_arn = _iam.bucket_arn(self, bucket_name)
        prefix = prefix.strip("/")
        objects = f"{bucket_arn}/{prefix}/*" if prefix else f"{bucket_arn}/*"
        _iam.add(
            self.grant_principal,
            _iam.list_prefix(bucket_arn, prefix),
            _iam.statement(
                ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                [objects],
            ),
        )

    # -- API ------------------------------------------------------------------------------------
    @property
    def output_s3_url(self) -> str:
        """``s3://bucket/prefix``: each job writes ``<job name>/output/model.tar.gz`` below it."""
        return self._kernel_value(  # type: ignore[no-any-return]
            self.output_bucket,
            f"s3_url:{self.output_prefix}",
            lambda b: b.s3_url_for_object(self.output_prefix or None),
        )

    def _kernel_value(self, source: Any, what: str, read: Callable[[Any], Any]) -> Any:
        """``read(source)``, asked of the CDK kernel once per source object.

        The request is built several times per synth (conflict check, botocore check, the
        pipeline's state) and each attribute of a jsii object is a round trip to the kernel
        (about as costly as creating a construct). A prop replaced after construction is a
        new source object, so it is read again.
        """
        cache: dict[str, tuple[Any, Any]] = self.__dict__.setdefault("_kernel_values", {})
        hit = cache.get(what)
        if hit is not None and hit[0] is source:
            return hit[1]
        value = read(source)
        cache[what] = (source, value)
        return value

    def grant_read_input(self, bucket: s3.IBucket, key_prefix: str = "") -> iam.Grant:
        """Let jobs list and read another prefix (e.g. channels overridden per execution)."""
        return _iam.grant(self, *_iam.bucket_prefix_read_statements(bucket, key_prefix))

    def code_channel(self) -> dict[str, Any]:
        """The ``code`` channel of a network-isolated job (the SDK's layout)."""
        return {
            "ChannelName": CODE_CHANNEL,
            "DataSource": {
                "S3DataSource": {
                    "S3DataType": "S3Prefix",
                    "S3Uri": self.code.s3_url,
                    "S3DataDistributionType": "FullyReplicated",
                }
            },
            "InputMode": "File",
        }

    def reserved_hyperparameters(self, job_name: str | None) -> dict[str, str]:
        """The encoded ``sagemaker_*`` keys; ``job_name`` None leaves ``sagemaker_job_name`` out."""
        return reserved_hyperparameters(
            entry_point=self.code.entry_point,
            # Isolated containers cannot reach S3: the code arrives as the "code" channel.
            submit_directory=f"{ISOLATED_CODE_DIR}/{self.code.object_name}"
            if self.enable_network_isolation
            else self.code.s3_url,
            container_log_level=self.container_log_level,
            region=self.region,
            job_name=job_name,
            mpi=self.mpi,
        )

    def training_job_request(self, job_name: str) -> dict[str, Any]:
        """CreateTrainingJob parameters for a job named ``job_name`` (tokens resolve at synth)."""
        return _shapes.deep_merge(self._base_request(job_name), self.extra_request_fields)

    def _base_request(self, job_name: str) -> dict[str, Any]:
        algorithm: dict[str, Any] = {
            "TrainingImage": self.image.image_uri,
            "TrainingInputMode": self.input_mode.value,
        }
        if self.metric_definitions:
            algorithm["MetricDefinitions"] = [
                {"Name": name, "Regex": regex} for name, regex in self.metric_definitions.items()
            ]
        kernel = self._kernel_value
        output: dict[str, Any] = {"S3OutputPath": self.output_s3_url}
        output_key = self.output_kms_key or kernel(
            self.output_bucket, "encryption_key", lambda b: b.encryption_key
        )
        if output_key is not None:
            # Without KmsKeyId SageMaker writes with the account's default S3 key (aws/s3),
            # not the bucket's (https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_OutputDataConfig.html).
            output["KmsKeyId"] = kernel(output_key, "output_key_arn", lambda k: k.key_arn)
        resources: dict[str, Any] = {
            "InstanceType": self.instance_type,
            "InstanceCount": self.instance_count,
            "VolumeSizeInGB": kernel(self.volume_size, "gib", lambda v: v.to_gibibytes()),
        }
        if self.volume_kms_key is not None:
            resources["VolumeKmsKeyId"] = kernel(
                self.volume_kms_key, "volume_key_arn", lambda k: k.key_arn
            )
        stopping: dict[str, Any] = {
            "MaxRuntimeInSeconds": kernel(self.max_run, "max_run", lambda d: d.to_seconds())
        }
        if self.max_wait is not None:
            stopping["MaxWaitTimeInSeconds"] = kernel(
                self.max_wait, "max_wait", lambda d: d.to_seconds()
            )
        request: dict[str, Any] = {
            "TrainingJobName": job_name,
            "AlgorithmSpecification": algorithm,
            "RoleArn": kernel(self.role, "role_arn", lambda r: r.role_arn),
            "HyperParameters": {**self.hyperparameters, **self.reserved_hyperparameters(job_name)},
            "OutputDataConfig": output,
            "ResourceConfig": resources,
            "StoppingCondition": stopping,
            "EnableNetworkIsolation": self.enable_network_isolation,
            "EnableInterContainerTrafficEncryption": self.encrypt_inter_container_traffic,
            "EnableManagedSpotTraining": self.use_spot_instances,
        }
        channels = [c.render(n, self.channel_uris[n]) for n, c in self.channels.items()]
        if self.enable_network_isolation:
            channels.append(self.code_channel())
        if channels:
            request["InputDataConfig"] = channels
        vpc_config = self.network.render()
        if vpc_config is not None:
            request["VpcConfig"] = vpc_config
        if self.checkpoint_bucket is not None:
            request["CheckpointConfig"] = {
                "S3Uri": kernel(
                    self.checkpoint_bucket,
                    f"s3_url:{self.checkpoint_prefix}",
                    lambda b: b.s3_url_for_object(self.checkpoint_prefix or None),
                ),
                "LocalPath": self.checkpoint_local_path or "/opt/ml/checkpoints",
            }
        if self.environment:
            request["Environment"] = dict(self.environment)
        if self.max_retry_attempts is not None:
            request["RetryStrategy"] = {"MaximumRetryAttempts": self.max_retry_attempts}
        if self.tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in self.tags.items()]
        return request
