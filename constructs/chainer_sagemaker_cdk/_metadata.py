"""What local mode reads from ``cdk.out``: construct metadata in the assembly manifest.

``chainer_sagemaker_cdk.local.assembly`` reads ``chainer-sagemaker:training-job`` (one per
``ChainerEstimator``) and ``chainer-sagemaker:model`` (one per ``ChainerModel``, and one for
the model a pipeline creates). Deploy-time values (tokens) are left out: local mode supplies
its own code path, region and data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from constructs import Construct

from ._validation import is_unresolved

__all__ = ["MODEL_METADATA", "TRAINING_JOB_METADATA", "record_model", "record_training_job"]

TRAINING_JOB_METADATA = "chainer-sagemaker:training-job"
MODEL_METADATA = "chainer-sagemaker:model"


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None and not is_unresolved(v)}


def record_training_job(
    scope: Construct,
    *,
    hyperparameters: Mapping[str, str],
    instance_count: int,
    instance_type: str,
    input_mode: str,
    channels: Mapping[str, Mapping[str, Any]],
    environment: Mapping[str, str],
    code_asset_hash: str | None,
) -> None:
    scope.node.add_metadata(
        TRAINING_JOB_METADATA,
        _plain(
            {
                "hyperparameters": _plain(hyperparameters),
                "instanceCount": instance_count,
                "instanceType": instance_type,
                "inputMode": input_mode,
                "channels": {name: _plain(spec) for name, spec in channels.items()},
                "environment": _plain(environment),
                "codeAssetHash": code_asset_hash,
            }
        ),
    )


def record_model(
    scope: Construct,
    *,
    environment: Mapping[str, str],
    code_asset_hash: str | None,
    model_data_asset_hash: str | None,
) -> None:
    scope.node.add_metadata(
        MODEL_METADATA,
        _plain(
            {
                "environment": _plain(environment),
                "codeAssetHash": code_asset_hash,
                "modelDataAssetHash": model_data_asset_hash,
            }
        ),
    )
