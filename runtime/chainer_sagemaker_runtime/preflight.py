"""Configuration checks that ``train`` runs before fetching code or running pip.

Every user mistake that can be seen from the configuration alone is reported here, all
together, as one :class:`ConfigError` (exit code 2, the failure file lists each problem with
its fix): a missing entry point, hyperparameters too big to pass to a process, bad archive
limits, bad MPI settings, and MPI asked for on an image without ``mpirun``. Finding them here
saves a code download and a ``pip install`` that would be wasted (docs/contract.md §1.7).
"""

from __future__ import annotations

import shutil

from chainer_sagemaker_runtime.archive import ArchiveLimits
from chainer_sagemaker_runtime.environment import TrainingEnv
from chainer_sagemaker_runtime.errors import ConfigError

__all__ = ["check_before_fetch"]


def check_before_fetch(env: TrainingEnv, *, mpirun: str = "mpirun") -> None:
    """Raise :class:`ConfigError` naming every problem found; return when there is none."""
    from chainer_sagemaker_runtime.training.mpi import resolve_mpi  # training imports us

    problems = env.launch_problems()
    try:
        ArchiveLimits.from_environ()
    except ConfigError as exc:
        problems += exc.problems
    try:
        settings = resolve_mpi(env.reserved, num_hosts=len(env.hosts), num_gpus=env.num_gpus)
    except ConfigError as exc:
        problems += exc.problems
    else:
        if settings.enabled and shutil.which(mpirun) is None:
            why = (
                f"sagemaker_use_mpi={env.reserved['sagemaker_use_mpi']!r}"
                if "sagemaker_use_mpi" in env.reserved
                else f"the job has {len(env.hosts)} hosts"
            )
            problems.append(
                f"MPI is on ({why}) but {mpirun} is not on PATH: use an image with Open MPI "
                "(runtime/docker/install.sh installs it), or set sagemaker_use_mpi to false "
                "for a single-host job"
            )
    if problems:
        raise ConfigError(problems)
