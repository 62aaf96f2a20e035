"""Synth-time checks of ChainerEstimator props, in the user's words (prop, value, fix)."""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aws_cdk import aws_s3 as s3

from ._validation import is_unresolved, require
from .hyperparameters import RESERVED_PREFIX, TUNING_OBJECTIVE
from .instance import has_instance_storage
from .training_input import validate_channel_name

if TYPE_CHECKING:
    from constructs import IConstruct

    from .estimator import ChainerEstimator

__all__ = [
    "CODE_CHANNEL",
    "MAX_JOB_PREFIX",
    "PROP_FIELDS",
    "check_extra_conflicts",
    "check_extra_fields",
    "check_isolated_code",
    "default_job_prefix",
    "validate",
]

_JOB_PREFIX = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
_ENV_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
MAX_JOB_PREFIX = 25  # leaves room for "--" and a 36-character UUID in a 63-character job name


def default_job_prefix(scope: IConstruct, fallback: str = "chainer") -> str:
    """``<construct id>-<8 hex of its path>``, lower case, single hyphens, at most
    ``MAX_JOB_PREFIX`` characters: readable, and distinct for constructs of the same id in
    other stacks or scopes (``fallback`` when the id has no letter or digit)."""
    slug = re.sub(r"[^a-z0-9]+", "-", scope.node.id.lower()).strip("-") or fallback
    digest = hashlib.sha256(scope.node.path.encode()).hexdigest()[:8]
    return f"{slug[: MAX_JOB_PREFIX - 9].strip('-')}-{digest}"


MAX_RUNTIME_SECONDS = 28 * 24 * 3600  # SageMaker's limit
CODE_CHANNEL = "code"
_LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
# The CreateTrainingJob fields the props render (extra_request_fields may not replace them).
PROP_FIELDS = frozenset(
    {
        "TrainingJobName",
        "AlgorithmSpecification",
        "RoleArn",
        "HyperParameters",
        "InputDataConfig",
        "OutputDataConfig",
        "ResourceConfig",
        "StoppingCondition",
        "EnableNetworkIsolation",
        "EnableInterContainerTrafficEncryption",
        "EnableManagedSpotTraining",
        "VpcConfig",
        "CheckpointConfig",
        "Environment",
        "RetryStrategy",
        "Tags",
    }
)


def validate(
    est: ChainerEstimator,
    hyperparameters: Mapping[str, Any],
    log_level: int,
    checkpoint_bucket: s3.IBucket | None,
    base_job_name: str | None,
) -> None:
    require(
        is_unresolved(est.instance_count) or est.instance_count >= 1,
        "instance_count",
        est.instance_count,
        "use 1 or more",
    )
    size = est.volume_size.to_gibibytes()
    require(
        is_unresolved(size) or size >= 1,
        "volume_size",
        f"{size} GiB",
        "use at least Size.gibibytes(1)",
    )
    run = est.max_run.to_seconds()
    require(
        is_unresolved(run) or 1 <= run <= MAX_RUNTIME_SECONDS,
        "max_run",
        f"{run} s",
        "use between 1 second and Duration.days(28)",
    )
    require(
        est.volume_kms_key is None or not has_instance_storage(est.instance_type),
        "volume_kms_key",
        "given",
        f"{est.instance_type} has local NVMe instance storage, which SageMaker encrypts with "
        "a hardware module and where it rejects VolumeKmsKeyId: leave volume_kms_key out, or "
        "use an EBS-only type (e.g. ml.p3, ml.m5, ml.c5); see "
        "https://docs.aws.amazon.com/sagemaker/latest/APIReference/API_ResourceConfig.html",
    )
    if est.max_wait is not None:
        require(
            est.use_spot_instances,
            "max_wait",
            est.max_wait.to_human_string(),
            "set use_spot_instances=True, or leave max_wait out",
        )
        wait = est.max_wait.to_seconds()
        require(
            is_unresolved(wait) or is_unresolved(run) or wait >= run,
            "max_wait",
            f"{wait} s",
            f"use at least max_run ({run} s)",
        )
    if est.checkpoint_local_path is not None:
        require(
            checkpoint_bucket is not None,
            "checkpoint_local_path",
            est.checkpoint_local_path,
            "also give checkpoint_bucket",
        )
        require(
            est.checkpoint_local_path.startswith("/"),
            "checkpoint_local_path",
            est.checkpoint_local_path,
            "give an absolute path such as /opt/ml/checkpoints",
        )
    if base_job_name is not None and not is_unresolved(base_job_name):
        require(
            bool(_JOB_PREFIX.match(base_job_name)) and len(base_job_name) <= MAX_JOB_PREFIX,
            "base_job_name",
            base_job_name,
            f"use at most {MAX_JOB_PREFIX} letters, digits and hyphens (runs are named "
            "'<base_job_name>--<uuid>', at most 63 characters)",
        )
        require(
            "--" not in base_job_name,
            "base_job_name",
            base_job_name,
            "use single hyphens: '--' separates the base from each run's part "
            "('<base_job_name>--<uuid>'), so that no base's runs match another base's",
        )
    for key in hyperparameters:
        require(
            not str(key).startswith(RESERVED_PREFIX) and key != TUNING_OBJECTIVE,
            "hyperparameters",
            key,
            "sagemaker_* keys are set by the estimator's own props (e.g. use_mpi)",
        )
    require(
        len(hyperparameters) <= 90,
        "hyperparameters",
        f"{len(hyperparameters)} keys",
        "SageMaker takes 100 keys, some reserved: use at most 90",
    )
    require(
        log_level in _LOG_LEVELS,
        "container_log_level",
        log_level,
        "use a logging level such as logging.INFO (20)",
    )
    for name in est.channels:
        validate_channel_name(name)
    require(
        not (est.enable_network_isolation and CODE_CHANNEL in est.channels),
        "channels",
        CODE_CHANNEL,
        "with enable_network_isolation the code arrives as the 'code' channel: rename yours",
    )
    for name, regex in est.metric_definitions.items():
        require(
            0 < len(name) <= 255 and 0 < len(regex) <= 500,
            "metric_definitions",
            {name: regex},
            "use names up to 255 and regexes up to 500 characters",
        )
    require(
        len(est.metric_definitions) <= 40,
        "metric_definitions",
        f"{len(est.metric_definitions)} metrics",
        "define at most 40 metrics",
    )
    for name in est.environment:
        require(
            bool(_ENV_NAME.match(name)),
            "environment",
            name,
            "use variable names of letters, digits and _, not starting with a digit",
        )
    require(len(est.tags) <= 50, "tags", f"{len(est.tags)} tags", "use at most 50 tags")
    # As in the SDK, 0 means "not set" for the MPI counts (falsy values are not sent).
    for prop, value, least in (
        ("num_processes", est.mpi.num_processes, 0),
        ("process_slots_per_host", est.mpi.process_slots_per_host, 0),
        ("max_retry_attempts", est.max_retry_attempts, 1),
    ):
        require(
            value is None or is_unresolved(value) or value >= least,
            prop,
            value,
            f"use {least} or more, or leave it out",
        )


def check_extra_fields(est: ChainerEstimator) -> None:
    if not est.extra_request_fields:
        return
    import botocore.session  # only when used: loading the service model takes a moment

    model = botocore.session.get_session().get_service_model("sagemaker")
    shape = model.operation_model("CreateTrainingJob").input_shape
    known = set(shape.members) if shape is not None else set()
    for name, value in est.extra_request_fields.items():
        require(
            name not in PROP_FIELDS or isinstance(value, Mapping),
            "extra_request_fields",
            name,
            f"{name} is set by the estimator's props: use those, or give an object to merge "
            f"into it (e.g. {{'ResourceConfig': {{'KeepAlivePeriodInSeconds': 600}}}})",
        )
        require(
            name in known,
            "extra_request_fields",
            name,
            "use a CreateTrainingJob parameter name, e.g. TensorBoardOutputConfig",
        )


def check_extra_conflicts(
    base: Mapping[str, Any], extra: Mapping[str, Any], path: str = ""
) -> None:
    """Extra fields may add to the request and remove (None) from it, not change what a prop
    set: that is the prop's job."""
    for key, value in extra.items():
        here = f"{path}.{key}" if path else key
        current = base.get(key)
        if value is None or current is None:
            continue
        if isinstance(value, Mapping) and isinstance(current, Mapping):
            check_extra_conflicts(current, value, here)
        else:
            require(
                value == current,
                "extra_request_fields",
                {here: value},
                f"{here} is set by the estimator's props ({current!r}): change the prop, or "
                "give None to remove the field",
            )


def check_isolated_code(est: ChainerEstimator) -> None:
    """An isolated job finds its code in the channel by file name: it must look like a tarball."""
    name = est.code.object_name
    if est.enable_network_isolation and not is_unresolved(name):
        require(
            name.endswith((".tar.gz", ".tgz", ".tar")),
            "code",
            name,
            "with enable_network_isolation the code object's name must end in .tar.gz or .tgz",
        )
