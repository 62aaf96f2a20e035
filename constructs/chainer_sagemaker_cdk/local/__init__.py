"""Local mode: run a synthesized training job and model on this machine, without AWS or Docker.

Reads ``cdk.out``, runs the container runtime's ``train`` and ``serve`` here::

    from chainer_sagemaker_cdk.local import CloudAssembly, LocalEndpoint, run_training

    job = CloudAssembly(Path("cdk.out")).training_job("DigitsStack")
    result = run_training(job, {"train": "data/train", "test": "data/test"}, Path("local-run"))
    with LocalEndpoint(result.model_artifact, Path("local-run"), environment=...) as endpoint:
        ...

A job of several instances runs each instance as its own host (Linux namespaces, as root);
``hosts="emulated"`` runs them under one mpirun instead. Or ``python -m chainer_sagemaker_cdk.local
--help``.
"""

from chainer_sagemaker_cdk.local._commands import LocalModeError
from chainer_sagemaker_cdk.local.artifacts import pack_model, pack_output
from chainer_sagemaker_cdk.local.assembly import (
    AssemblyError,
    CloudAssembly,
    ModelSpec,
    TrainingJobSpec,
)
from chainer_sagemaker_cdk.local.netns import NamespacesUnavailable, namespaces_unavailable
from chainer_sagemaker_cdk.local.serving import LocalEndpoint
from chainer_sagemaker_cdk.local.training import (
    HostOutcome,
    HostsMode,
    LocalTrainingResult,
    run_training,
)

__all__ = [
    "AssemblyError",
    "CloudAssembly",
    "HostOutcome",
    "HostsMode",
    "LocalEndpoint",
    "LocalModeError",
    "LocalTrainingResult",
    "ModelSpec",
    "NamespacesUnavailable",
    "TrainingJobSpec",
    "namespaces_unavailable",
    "pack_model",
    "pack_output",
    "run_training",
]
