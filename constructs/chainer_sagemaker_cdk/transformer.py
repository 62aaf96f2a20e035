"""``ChainerTransformer``: a SageMaker batch transform (CreateTransformJob) for a Chainer model.

A transform job is not a CloudFormation resource: it runs when something calls
CreateTransformJob. The construct holds the job's definition (validated at synth), gives the
model's execution role exactly the S3, KMS and log access the job needs, and hands the request
to whoever runs it: :meth:`ChainerTransformer.step` (a Step Functions ``createTransformJob.sync``
state), :meth:`ChainerTransformer.transform_job_request` (the complete API parameters, for the
client or any other runner), and ``python -m chainer_sagemaker_cdk.local transform`` (the
definition is recorded in ``cdk.out`` as ``chainer-sagemaker:transform`` metadata).

Limits follow the CreateTransformJob API reference
(https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_CreateTransformJob.html):
``MaxPayloadInMB`` 0-100 and ``MaxConcurrentTransforms * MaxPayloadInMB`` at most 100,
invocation timeout 1-3600 s and 0-3 retries, at most 16 environment variables and 50 tags,
JSONPath filters of at most 63 characters.

Job names: ``<base_job_name>--<run>`` (:func:`_iam.run_name`), and the rights that run them
are scoped to ``<base_job_name>--*``: with bases that contain no ``--``, that pattern is
prefix-free, so ``chainer-digits``' role never reaches a job of ``chainer-digits-v2``
(docs/contract.md §5). After a pipeline, a transform job takes the training job's name,
which has that form for the estimator's base.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_cdk import ArnFormat, Duration
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from . import _iam
from ._estimator_checks import MAX_JOB_PREFIX, default_job_prefix
from ._metadata import _plain
from ._validation import is_unresolved, require, stack_of
from .instance import has_instance_storage, normalize_instance_type

if TYPE_CHECKING:
    from ._transform_step import TransformStep
    from .estimator import ChainerEstimator
    from .model import ChainerModel
    from .pipeline import TrainingPipelineFragment
    from .training_pipeline import TrainingPipeline

__all__ = ["TRANSFORM_METADATA", "ChainerTransformer"]

TRANSFORM_METADATA = "chainer-sagemaker:transform"
SPLIT_TYPES = ("None", "Line", "RecordIO", "TFRecord")
COMPRESSION_TYPES = ("None", "Gzip")
BATCH_STRATEGIES = ("SingleRecord", "MultiRecord")
ASSEMBLY_TYPES = ("None", "Line")
JOIN_SOURCES = ("None", "Input")
MAX_PAYLOAD_MB = 100
_JOB_PREFIX = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$")


def _one_of(prop: str, value: str | None, allowed: tuple[str, ...]) -> None:
    require(
        value is None or value in allowed,
        prop,
        value,
        f"use one of {', '.join(allowed)} (SageMaker's spelling), or leave it out",
    )


def _json_path(prop: str, value: str | None) -> None:
    require(
        value is None or (value.startswith("$") and len(value) <= 63),
        prop,
        value,
        "give a JSONPath that starts with $ (at most 63 characters), e.g. $[1:] or $.features",
    )


def _whole(prop: str, value: int | None, least: int, most: int | None = None) -> None:
    if value is None or is_unresolved(value):
        return
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= least
    ok = ok and (most is None or value <= most)
    span = f"{least} to {most}" if most is not None else f"{least} or more"
    require(ok, prop, value, f"use a whole number from {span}, or leave it out")


class ChainerTransformer(Construct):
    """A batch transform of an S3 prefix (or manifest) with a Chainer model.

    Give ``model`` (a :class:`ChainerModel`) or ``pipeline`` (the model a deploying
    :class:`TrainingPipeline` creates from each training job, named after the job at run time:
    :meth:`step` chained after the pipeline takes that name from the state).
    """

    def __init__(
        self,
        scope: Construct,
        id: str,
        *,
        input_bucket: s3.IBucket,
        output_bucket: s3.IBucket,
        model: ChainerModel | None = None,
        pipeline: TrainingPipeline | TrainingPipelineFragment | None = None,
        input_prefix: str = "",
        manifest_key: str | None = None,
        output_prefix: str = "transform",
        content_type: str | None = None,
        split_type: str | None = None,
        compression_type: str | None = None,
        batch_strategy: str | None = None,
        max_payload_in_mb: int | None = None,
        max_concurrent_transforms: int | None = None,
        assemble_with: str | None = None,
        accept: str | None = None,
        output_kms_key: kms.IKey | None = None,
        instance_type: str | None = None,
        instance_count: int = 1,
        volume_kms_key: kms.IKey | None = None,
        encrypt_volume: bool = True,
        input_filter: str | None = None,
        output_filter: str | None = None,
        join_source: str | None = None,
        invocations_timeout: Duration | None = None,
        invocations_max_retries: int | None = None,
        environment: Mapping[str, str] | None = None,
        tags: Mapping[str, str] | None = None,
        base_job_name: str | None = None,
    ) -> None:
        """Define the transform.

        :param input_bucket: where the input objects are.
        :param output_bucket: where the ``<input>.out`` objects go.
        :param model: the model that scores the records; instead of ``pipeline``.
        :param pipeline: score with the model this pipeline (or fragment) just trained and
            created, under its serving role; instead of ``model``.
        :param input_prefix: every object under this key prefix is transformed (with
            ``manifest_key``: the prefix the manifest's entries lie under, which the role may
            read); left out, the whole bucket.
        :param manifest_key: an S3 manifest object listing the inputs (``S3DataType``
            ``ManifestFile``); left out, every object under ``input_prefix`` (``S3Prefix``).
        :param output_prefix: key prefix of the results; left out, ``transform``.
        :param content_type: MIME type of the records (``text/csv``, ``application/json``,
            ``application/x-npy``); left out, SageMaker sends none and the model server
            decides.
        :param split_type: ``None`` (each object is one record), ``Line``, ``RecordIO`` or
            ``TFRecord``; left out, ``None``.
        :param compression_type: ``None`` or ``Gzip``; left out, ``None``.
        :param batch_strategy: ``SingleRecord`` (one record per request) or ``MultiRecord``
            (as many as ``max_payload_in_mb`` allows); left out, SageMaker asks the container
            (``GET /execution-parameters``).
        :param max_payload_in_mb: request size limit, 0-100 (0: no limit, chunked); left out,
            the container's answer, else 6.
        :param max_concurrent_transforms: parallel requests per instance (0: SageMaker picks);
            left out, the container's answer, else 1.
        :param assemble_with: ``Line`` adds a newline after every output record, ``None``
            concatenates; left out, ``None``.
        :param accept: MIME type of the results; left out, the model server's default.
        :param output_kms_key: encrypts the results in S3; left out, the bucket's encryption.
        :param instance_type: left out, the model's ``instance_type`` (``ml.m5.large`` for a
            pipeline's model).
        :param instance_count: left out, 1.
        :param volume_kms_key: encrypts the instances' storage volumes; left out with
            ``encrypt_volume``, a key is created (with rotation).
        :param encrypt_volume: False leaves ``VolumeKmsKeyId`` out: instance types with local
            NVMe storage (ml.g5, ml.m5d, ...) are encrypted by SageMaker and reject a key;
            left out, True.
        :param input_filter: JSONPath applied to each input record (e.g. ``$[1:]`` drops a CSV
            id column); left out, the whole record.
        :param output_filter: JSONPath applied to each (joined) output record; left out, all.
        :param join_source: ``Input`` joins each output record with its input record; left
            out, ``None``.
        :param invocations_timeout: per request, 1 s to 1 hour; left out, SageMaker's 600 s.
        :param invocations_max_retries: retries of a failed request, 0-3; left out, 3.
        :param environment: extra container variables for this job (at most 16); left out,
            none.
        :param tags: job tags (at most 50); left out, none.
        :param base_job_name: job names are ``<base_job_name>--<uuid>`` (or
            ``<base_job_name>--<run>`` given per execution): at most 25 letters, digits and
            single hyphens; the state machine's rights are scoped to ``<base_job_name>--*``.
            Left out, the pipeline estimator's ``base_job_name`` (a pipeline's transform jobs
            then take the training job's name, ``<base_job_name>--<uuid>``), else
            ``<construct id>-<8 hex of its path>`` (distinct for transformers of one id in two
            stacks), shortened. A pipeline's transformer given a base of its own
            names its jobs ``<base_job_name>--<uuid>``.
        """
        super().__init__(scope, id)
        require(
            (model is None) != (pipeline is None),
            "model/pipeline",
            "both" if model is not None else "neither",
            "give exactly one of model (a ChainerModel) or pipeline (its trained model)",
        )
        for prop, value, allowed in (
            ("split_type", split_type, SPLIT_TYPES),
            ("compression_type", compression_type, COMPRESSION_TYPES),
            ("batch_strategy", batch_strategy, BATCH_STRATEGIES),
            ("assemble_with", assemble_with, ASSEMBLY_TYPES),
            ("join_source", join_source, JOIN_SOURCES),
        ):
            _one_of(prop, value, allowed)
        _whole("max_payload_in_mb", max_payload_in_mb, 0, MAX_PAYLOAD_MB)
        _whole("max_concurrent_transforms", max_concurrent_transforms, 0)
        _whole("instance_count", instance_count, 1)
        _whole("invocations_max_retries", invocations_max_retries, 0, 3)
        if (
            max_payload_in_mb is not None
            and max_concurrent_transforms
            and not is_unresolved(max_payload_in_mb)
            and not is_unresolved(max_concurrent_transforms)
        ):
            require(
                max_payload_in_mb * max_concurrent_transforms <= MAX_PAYLOAD_MB,
                "max_concurrent_transforms*max_payload_in_mb",
                max_payload_in_mb * max_concurrent_transforms,
                f"keep the product at most {MAX_PAYLOAD_MB} MB (SageMaker's limit): lower one",
            )
        _json_path("input_filter", input_filter)
        _json_path("output_filter", output_filter)
        for prop, text in (("content_type", content_type), ("accept", accept)):
            require(
                text is None or is_unresolved(text) or 0 < len(text) <= 256,
                prop,
                text,
                "give a MIME type such as text/csv (at most 256 characters)",
            )
        if invocations_timeout is not None and not invocations_timeout.is_unresolved():
            seconds = invocations_timeout.to_seconds()
            require(
                1 <= seconds <= 3600,
                "invocations_timeout",
                f"{seconds} s",
                "use 1 second to 1 hour (Duration.minutes(10))",
            )
        env = dict(environment or {})
        require(len(env) <= 16, "environment", sorted(env), "use at most 16 variables")
        for name, value in env.items():
            require(
                bool(_ENV_NAME.match(name)),
                "environment",
                name,
                "name variables with letters, digits and _ (not starting with a digit)",
            )
            require(len(value) <= 10240, "environment", name, "keep values to 10240 characters")
        self.tags = dict(tags or {})
        require(len(self.tags) <= 50, "tags", len(self.tags), "use at most 50 tags")

        self.model = model
        self.pipeline: TrainingPipelineFragment | None = None
        self.estimator: ChainerEstimator | None = None
        self.model_name_path: str | None = None
        """Where a pipeline's state holds its model's name (the training job's name)."""
        self.job_name_path: str | None = None
        """Where the state holds the transform job's name by default: a pipeline's training
        job's name when the transformer shares the estimator's base; else None (generated)."""
        if model is not None:
            self.grant_principal: iam.IPrincipal = model.grant_principal
            default_type = model.instance_type
        else:
            fragment = getattr(pipeline, "fragment", pipeline)
            principal = getattr(fragment, "serving_principal", None)
            require(
                principal is not None,
                "pipeline",
                "deploy=False",
                "the pipeline creates a model only when it deploys: leave deploy on, or give "
                "model=ChainerModel.from_training_job(...)",
            )
            self.pipeline = fragment  # type: ignore[assignment]
            self.estimator = fragment.estimator  # type: ignore[union-attr]
            self.grant_principal = principal  # type: ignore[assignment]
            self.model_name_path = "$.training.TrainingJobName"
            default_type = fragment.endpoint_instance_type  # type: ignore[union-attr]
        self.instance_type = normalize_instance_type(instance_type or default_type)
        self.instance_count = instance_count
        self.base_job_name = base_job_name or (
            self.estimator.base_job_name if self.estimator is not None else self._default_prefix()
        )
        self._check_base_job_name()
        if self.estimator is not None and self.base_job_name == self.estimator.base_job_name:
            self.job_name_path = self.model_name_path

        self.volume_kms_key: kms.IKey | None = None
        if encrypt_volume:
            require(
                not has_instance_storage(self.instance_type),
                "encrypt_volume",
                True,
                f"{self.instance_type} has local NVMe storage, which SageMaker encrypts and "
                "which rejects VolumeKmsKeyId: set encrypt_volume=False",
            )
            self.volume_kms_key = volume_kms_key or kms.Key(
                self,
                "VolumeKey",
                enable_key_rotation=True,
                description="SageMaker batch transform storage volumes",
            )
        else:
            require(
                volume_kms_key is None,
                "volume_kms_key",
                "given",
                "set encrypt_volume=True (the default) or leave volume_kms_key out",
            )

        self.input_bucket = input_bucket
        self.input_prefix = input_prefix.strip("/")
        self.manifest_key = manifest_key.strip("/") if manifest_key else None
        self.output_bucket = output_bucket
        self.output_prefix = output_prefix.strip("/")
        self.output_kms_key = output_kms_key
        self.input_uri = input_bucket.s3_url_for_object(self.manifest_key or self.input_prefix)
        self.output_uri = output_bucket.s3_url_for_object(self.output_prefix)

        # What the model's role needs for this job (it is the job's role).
        principal = self.grant_principal
        _iam.add(principal, *_iam.bucket_prefix_read_statements(input_bucket, self.input_prefix))
        if self.manifest_key is not None:
            _iam.add(
                principal,
                _iam.statement(["s3:GetObject"], [input_bucket.arn_for_objects(self.manifest_key)]),
            )
        _iam.add(principal, *self._write_statements(output_bucket, self.output_prefix))
        for key in (output_kms_key, self.volume_kms_key):
            if key is not None:
                _iam.key_use(principal, key)
        self._grant_logs()

        self._request = self._render(
            content_type=content_type,
            split_type=split_type,
            compression_type=compression_type,
            batch_strategy=batch_strategy,
            max_payload_in_mb=max_payload_in_mb,
            max_concurrent_transforms=max_concurrent_transforms,
            assemble_with=assemble_with,
            accept=accept,
            input_filter=input_filter,
            output_filter=output_filter,
            join_source=join_source,
            invocations_timeout=invocations_timeout,
            invocations_max_retries=invocations_max_retries,
            environment=env,
        )
        self._record_metadata()

    # -- request --------------------------------------------------------------------------
    def _check_base_job_name(self) -> None:
        # The estimator's rules (_estimator_checks.validate): the same run names, same reasons.
        base = self.base_job_name
        if is_unresolved(base):
            return
        require(
            bool(_JOB_PREFIX.match(base)) and len(base) <= MAX_JOB_PREFIX,
            "base_job_name",
            base,
            f"use at most {MAX_JOB_PREFIX} letters, digits and hyphens (jobs are named "
            "'<base_job_name>--<uuid>', at most 63 characters)",
        )
        require(
            _iam.RUN_SEPARATOR not in base,
            "base_job_name",
            base,
            "use single hyphens: '--' separates the base from each job's part "
            "('<base_job_name>--<uuid>'), so that no base's jobs match another base's",
        )

    @property
    def job_name_pattern(self) -> str:
        """Every job name this transformer's rights reach, ``<base_job_name>--*`` (as IAM and
        Step Functions' ``StringMatches`` read it)."""
        return _iam.run_name_pattern(self.base_job_name)

    def _default_prefix(self) -> str:
        return default_job_prefix(self, fallback="transform")

    def _render(
        self,
        *,
        content_type: str | None,
        split_type: str | None,
        compression_type: str | None,
        batch_strategy: str | None,
        max_payload_in_mb: int | None,
        max_concurrent_transforms: int | None,
        assemble_with: str | None,
        accept: str | None,
        input_filter: str | None,
        output_filter: str | None,
        join_source: str | None,
        invocations_timeout: Duration | None,
        invocations_max_retries: int | None,
        environment: dict[str, str],
    ) -> dict[str, Any]:
        source = {
            "S3DataType": "ManifestFile" if self.manifest_key else "S3Prefix",
            "S3Uri": self.input_uri,
        }
        transform_input: dict[str, Any] = {"DataSource": {"S3DataSource": source}}
        for key, value in (
            ("ContentType", content_type),
            ("SplitType", split_type),
            ("CompressionType", compression_type),
        ):
            if value is not None:
                transform_input[key] = value
        output: dict[str, Any] = {"S3OutputPath": self.output_uri}
        if accept is not None:
            output["Accept"] = accept
        if assemble_with is not None:
            output["AssembleWith"] = assemble_with
        if self.output_kms_key is not None:
            output["KmsKeyId"] = self.output_kms_key.key_arn
        resources: dict[str, Any] = {
            "InstanceType": self.instance_type,
            "InstanceCount": self.instance_count,
        }
        if self.volume_kms_key is not None:
            resources["VolumeKmsKeyId"] = self.volume_kms_key.key_arn
        request: dict[str, Any] = {
            "TransformInput": transform_input,
            "TransformOutput": output,
            "TransformResources": resources,
        }
        if batch_strategy is not None:
            request["BatchStrategy"] = batch_strategy
        if max_payload_in_mb is not None:
            request["MaxPayloadInMB"] = max_payload_in_mb
        if max_concurrent_transforms is not None:
            request["MaxConcurrentTransforms"] = max_concurrent_transforms
        client: dict[str, Any] = {}
        if invocations_timeout is not None:
            client["InvocationsTimeoutInSeconds"] = invocations_timeout.to_seconds()
        if invocations_max_retries is not None:
            client["InvocationsMaxRetries"] = invocations_max_retries
        if client:
            request["ModelClientConfig"] = client
        processing = {
            k: v
            for k, v in (
                ("InputFilter", input_filter),
                ("OutputFilter", output_filter),
                ("JoinSource", join_source),
            )
            if v is not None
        }
        if processing:
            request["DataProcessing"] = processing
        if environment:
            request["Environment"] = environment
        if self.tags:
            request["Tags"] = [{"Key": k, "Value": v} for k, v in self.tags.items()]
        return request

    @property
    def model_name(self) -> str | None:
        """The model's name (a deploy-time token); None for a pipeline's model."""
        return self.model.model_name if self.model is not None else None

    def transform_job_request(self, name: str, model_name: str | None = None) -> dict[str, Any]:
        """The complete CreateTransformJob parameters for a job called ``name``.

        :param model_name: left out, the ``model``'s name (required with ``pipeline``; the
            step takes it from the state).
        """
        chosen = model_name or self.model_name
        require(
            chosen is not None,
            "model_name",
            None,
            "give the name of the model the pipeline created (its training job's name)",
        )
        return {"TransformJobName": name, "ModelName": chosen, **_copy(self._request)}

    # -- grants ---------------------------------------------------------------------------
    @staticmethod
    def _write_statements(bucket: s3.IBucket, key_prefix: str) -> list[dict[str, Any]]:
        # Batch transform only uploads results (multipart for large ones): no read, no list.
        prefix = key_prefix.strip("/")
        statements = [
            _iam.statement(
                ["s3:PutObject", "s3:AbortMultipartUpload"],
                [bucket.arn_for_objects(f"{prefix}/*" if prefix else "*")],
            )
        ]
        if bucket.encryption_key is not None:
            statements.append(
                _iam.statement(_iam.KMS_ENCRYPT_DECRYPT, [bucket.encryption_key.key_arn])
            )
        return statements

    def _grant_logs(self) -> None:
        # Transform jobs log to /aws/sagemaker/TransformJobs, streams named after the job.
        stack = stack_of(self)
        group = stack.format_arn(
            service="logs",
            resource="log-group",
            resource_name="/aws/sagemaker/TransformJobs",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        _iam.add(
            self.grant_principal,
            _iam.statement(["logs:CreateLogGroup", "logs:DescribeLogStreams"], [group]),
            _iam.statement(
                ["logs:CreateLogStream", "logs:PutLogEvents"], [f"{group}:log-stream:*"]
            ),
            _iam.statement(
                ["cloudwatch:PutMetricData"],
                ["*"],
                {"StringLike": {"cloudwatch:namespace": ["/aws/sagemaker/*", "aws/sagemaker/*"]}},
            ),
        )

    def grant_read_input(self, bucket: s3.IBucket, key_prefix: str = "") -> iam.Grant:
        """Let the job read another prefix (inputs overridden per execution)."""
        return _iam.grant(
            self.grant_principal, *_iam.bucket_prefix_read_statements(bucket, key_prefix)
        )

    def grant_write_output(self, bucket: s3.IBucket, key_prefix: str = "") -> iam.Grant:
        """Let the job write results under another prefix (outputs overridden per execution)."""
        return _iam.grant(self.grant_principal, *self._write_statements(bucket, key_prefix))

    # -- running it ---------------------------------------------------------------------------
    def step(self, scope: Construct, id: str, **props: Any) -> TransformStep:
        """A ``createTransformJob.sync`` state for this transform (see :class:`TransformStep`)."""
        from ._transform_step import TransformStep

        return TransformStep(scope, id, transformer=self, **props)

    def _record_metadata(self) -> None:
        request = self._request
        data: dict[str, Any] = {
            "transformInput": {
                k: v for k, v in request["TransformInput"].items() if k != "DataSource"
            },
            "transformOutput": _plain(
                {k: v for k, v in request["TransformOutput"].items() if k != "S3OutputPath"}
            ),
            "s3DataType": request["TransformInput"]["DataSource"]["S3DataSource"]["S3DataType"],
            "batchStrategy": request.get("BatchStrategy"),
            "maxPayloadInMB": request.get("MaxPayloadInMB"),
            "maxConcurrentTransforms": request.get("MaxConcurrentTransforms"),
            "modelClientConfig": request.get("ModelClientConfig"),
            "dataProcessing": request.get("DataProcessing"),
            "environment": _plain(request.get("Environment", {})),
        }
        if self.model is not None:
            data["modelPath"] = self.model.node.path
        elif self.estimator is not None:
            data["trainingJobPath"] = self.estimator.node.path
        data["transformInput"].pop("KmsKeyId", None)
        data["transformOutput"].pop("KmsKeyId", None)
        self.node.add_metadata(TRANSFORM_METADATA, _plain(data))


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
