"""Hyperparameters encoded exactly as the SageMaker Python SDK's Chainer estimator sends them.

The SDK JSON-encodes every value (``json.dumps``) and adds its reserved ``sagemaker_*`` keys;
Chainer's MPI keys are only sent when truthy (docs/contract.md §1.3).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RESERVED_PREFIX",
    "MpiOptions",
    "encode_hyperparameters",
    "encode_value",
    "reserved_hyperparameters",
]

RESERVED_PREFIX = "sagemaker_"
TUNING_OBJECTIVE = "_tuning_objective_metric"


@dataclass(frozen=True)
class MpiOptions:
    """ChainerMN launch options; values left out (or falsy) are not sent, as in the SDK.

    :param use_mpi: force MPI on or off; left out, the runtime uses MPI with more than one host.
    :param num_processes: total MPI processes; left out, slots per host times hosts.
    :param process_slots_per_host: processes per host; left out, the host's GPUs (or 1).
    :param additional_mpi_options: extra ``mpirun`` options, appended verbatim.
    """

    use_mpi: bool | None = None
    num_processes: int | None = None
    process_slots_per_host: int | None = None
    additional_mpi_options: str | None = None


def encode_value(value: Any) -> str:
    """``json.dumps`` of one value: ``1`` -> ``1``, ``True`` -> ``true``, ``x`` -> ``"x"``."""
    return json.dumps(value)


def encode_hyperparameters(hyperparameters: Mapping[Any, Any]) -> dict[str, str]:
    """``{str(key): json.dumps(value)}``, as ``Framework._json_encode_hyperparameters``."""
    return {str(key): encode_value(value) for key, value in hyperparameters.items()}


def reserved_hyperparameters(
    *,
    entry_point: str,
    submit_directory: str,
    container_log_level: int,
    region: str,
    job_name: str | None,
    enable_cloudwatch_metrics: bool = False,
    mpi: MpiOptions | None = None,
) -> dict[str, str]:
    """The ``sagemaker_*`` keys the SDK adds, JSON-encoded.

    ``sagemaker_enable_cloudwatch_metrics`` is always ``false`` from SDK 1.x on (the SDK
    ignores its deprecated ``enable_cloudwatch_metrics`` argument); the parameter is kept for
    replaying jobs of older clients.

    ``job_name`` None leaves ``sagemaker_job_name`` out (a pipeline fills it per execution).
    """
    reserved: dict[str, Any] = {
        "sagemaker_submit_directory": submit_directory,
        "sagemaker_program": entry_point,
        "sagemaker_enable_cloudwatch_metrics": enable_cloudwatch_metrics,
        "sagemaker_container_log_level": container_log_level,
        "sagemaker_region": region,
    }
    if job_name is not None:
        reserved["sagemaker_job_name"] = job_name
    options = mpi or MpiOptions()
    extra = {
        "sagemaker_use_mpi": options.use_mpi,
        "sagemaker_num_processes": options.num_processes,
        "sagemaker_process_slots_per_host": options.process_slots_per_host,
        "sagemaker_additional_mpi_options": options.additional_mpi_options,
    }
    reserved.update({key: value for key, value in extra.items() if value})
    return encode_hyperparameters(reserved)
