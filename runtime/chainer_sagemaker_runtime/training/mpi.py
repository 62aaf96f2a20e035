"""MPI for distributed training (docs/contract.md §2): the decision rule and the mpirun argv.

Everything here is pure, so it is table-tested; :mod:`.cluster` does the SSH side and
:mod:`.ranks` what runs around each rank.

What a rank sees: the master's environment for everything that is the same on every host
(hyperparameters, channels, ``SM_NUM_GPUS``, ``PYTHONPATH``, credentials), forwarded with ``-x``;
the per-host values (``CURRENT_HOST``, ``SM_CURRENT_HOST``, ``SM_RESOURCE_CONFIG``,
``SM_NUM_CPUS``, ``SM_TRAINING_ENV``) are not forwarded on a multi-host job but rebuilt on the
rank's own host from that host's ``resourceconfig.json`` (see :mod:`.ranks`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chainer_sagemaker_runtime.errors import ConfigError

__all__ = [
    "HOST_ENV_FLAG",
    "PER_HOST_NAMES",
    "MpiSettings",
    "forwarded_env_names",
    "mpirun_argv",
    "resolve_mpi",
    "truthy",
]

# Set (and forwarded) on multi-host jobs: the rank wrapper then rebuilds PER_HOST_NAMES.
HOST_ENV_FLAG = "CHAINER_SAGEMAKER_RANK_HOST_ENV"
PER_HOST_NAMES = frozenset(
    {"CURRENT_HOST", "SM_CURRENT_HOST", "SM_RESOURCE_CONFIG", "SM_NUM_CPUS", "SM_TRAINING_ENV"}
)

_FORWARDED_PREFIXES = ("SM_",)
_FORWARDED_NAMES = (
    "PYTHONPATH",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_ENDPOINT_URL",
    "SAGEMAKER_BASE_DIR",
    "CHAINER_SAGEMAKER_COMPAT",
    "CURRENT_HOST",
    "SAGEMAKER_REGION",
    "SAGEMAKER_JOB_NAME",
    "TRAINING_JOB_NAME",
)


def truthy(value: Any) -> bool:
    """Hyperparameter truth: JSON true, non-zero numbers, and the strings true/1/yes."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "y", "on"}
    return bool(value)


@dataclass(frozen=True)
class MpiSettings:
    """How a job runs: ``enabled`` False means a plain process."""

    enabled: bool
    processes_per_host: int
    num_processes: int
    additional_options: tuple[str, ...]
    # From ``--NCCL_DEBUG X`` in sagemaker_additional_mpi_options, as the SageMaker toolkits do.
    nccl_debug: str | None = None


def _positive_int(reserved: Mapping[str, Any], key: str, problems: list[str]) -> int | None:
    value = reserved.get(key)
    if value in (None, "", 0, False):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = -1
    if number < 1 or isinstance(value, bool) or (isinstance(value, float) and value != number):
        problems.append(f"hyperparameter {key} must be a positive integer, got {value!r}")
        return None
    return number


def resolve_mpi(reserved: Mapping[str, Any], *, num_hosts: int, num_gpus: int) -> MpiSettings:
    """Apply the decision rule: MPI when ``sagemaker_use_mpi`` says so, else with >1 host."""
    problems: list[str] = []
    if "sagemaker_use_mpi" in reserved and reserved["sagemaker_use_mpi"] is not None:
        enabled = truthy(reserved["sagemaker_use_mpi"])
    else:
        enabled = num_hosts > 1
    slots = _positive_int(reserved, "sagemaker_process_slots_per_host", problems)
    total = _positive_int(reserved, "sagemaker_num_processes", problems)
    options = reserved.get("sagemaker_additional_mpi_options") or ""
    if not isinstance(options, str):
        problems.append(
            f"hyperparameter sagemaker_additional_mpi_options must be a string, got {options!r}"
        )
        options = ""
    try:
        extra = tuple(shlex.split(options))
    except ValueError as exc:
        problems.append(f"hyperparameter sagemaker_additional_mpi_options is unparsable: {exc}")
        extra = ()
    extra, nccl_debug = _take_nccl_debug(extra, problems)
    per_host = slots or max(num_gpus, 1)
    if enabled and total is not None and total > per_host * num_hosts:
        source = (
            "sagemaker_process_slots_per_host"
            if slots
            else ("the GPU count" if num_gpus else "1 without GPUs")
        )
        problems.append(
            f"hyperparameter sagemaker_num_processes={total} is more than the "
            f"{per_host * num_hosts} slots of this job ({num_hosts} host(s) x {per_host} per "
            f"host, from {source}); "
            "lower sagemaker_num_processes or raise sagemaker_process_slots_per_host"
        )
    if problems:
        raise ConfigError(problems)
    return MpiSettings(
        enabled=enabled,
        processes_per_host=per_host,
        num_processes=total or per_host * num_hosts,
        additional_options=extra,
        nccl_debug=nccl_debug,
    )


def _take_nccl_debug(
    options: tuple[str, ...], problems: list[str]
) -> tuple[tuple[str, ...], str | None]:
    """Remove ``--NCCL_DEBUG X`` / ``--NCCL_DEBUG=X`` (the toolkits' option) from ``options``."""
    rest: list[str] = []
    value: str | None = None
    i = 0
    while i < len(options):
        item = options[i]
        if item == "--NCCL_DEBUG":
            if i + 1 >= len(options):
                problems.append(
                    "hyperparameter sagemaker_additional_mpi_options: --NCCL_DEBUG needs a "
                    "value, for example --NCCL_DEBUG WARN"
                )
                break
            value = options[i + 1]
            i += 2
            continue
        if item.startswith("--NCCL_DEBUG="):
            value = item.partition("=")[2]
        else:
            rest.append(item)
        i += 1
    return tuple(rest), value


def forwarded_env_names(environ: Mapping[str, str], *, multi_host: bool = False) -> list[str]:
    """The variables every rank needs: SM_*, PYTHONPATH, AWS credentials when set.

    On a multi-host job the per-host ones are left out (each host's rank wrapper sets them).
    """
    names = {n for n in environ if n.startswith(_FORWARDED_PREFIXES)}
    names.update(n for n in _FORWARDED_NAMES if n in environ)
    if multi_host:
        names -= PER_HOST_NAMES
        names.add(HOST_ENV_FLAG)
    return sorted(names)


def mpirun_argv(
    *,
    hosts: Sequence[str],
    settings: MpiSettings,
    interface: str,
    forwarded: Sequence[str],
    command: Sequence[str],
    nccl_debug: str = "INFO",
    mpirun: str = "mpirun",
    all_local: bool = False,
) -> list[str]:
    """The full mpirun command line (docs/contract.md §2).

    A single-host job names ``localhost`` and the loopback interface instead of its SageMaker
    host name and ``eth0``, so it never depends on ``algo-1`` resolving or ``eth0`` existing.
    ``all_local`` (local mode) runs every host's processes on this machine the same way.
    """
    single = len(hosts) == 1 or all_local
    names = ["localhost"] if single else list(hosts)
    iface = "lo" if single else interface
    slots = settings.processes_per_host * (len(hosts) if all_local else 1)
    host_arg = ",".join(n if slots == 1 else f"{n}:{slots}" for n in names)
    argv = [
        mpirun,
        "--host", host_arg,
        "-np", str(settings.num_processes),
        "--allow-run-as-root",
        "--tag-output",
        "-mca", "btl_tcp_if_include", iface,
        "-mca", "oob_tcp_if_include", iface,
        "-mca", "plm_rsh_no_tree_spawn", "1",
        "-bind-to", "none",
        "-map-by", "slot",
        "-mca", "pml", "ob1",
        "-mca", "btl", "^openib",
        "-mca", "orte_abort_on_non_zero_status", "1",
        "-x", f"NCCL_SOCKET_IFNAME={iface}",
        "-x", f"NCCL_DEBUG={settings.nccl_debug or nccl_debug}",
        "-x", "PATH",
        "-x", "LD_LIBRARY_PATH",
    ]  # fmt: skip
    for name in forwarded:
        if name not in ("PATH", "LD_LIBRARY_PATH"):
            argv += ["-x", name]
    argv += list(settings.additional_options)
    argv += list(command)
    return argv
