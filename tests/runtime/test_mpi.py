"""The MPI decision rule and the mpirun command line (docs/contract.md §2), as tables."""

from __future__ import annotations

from typing import Any

import pytest

from chainer_sagemaker_runtime.errors import ConfigError
from chainer_sagemaker_runtime.training.mpi import (
    MpiSettings,
    forwarded_env_names,
    mpirun_argv,
    resolve_mpi,
)

# (reserved hyperparameters, hosts, gpus) -> (enabled, per host, total, extra options)
DECISIONS: list[tuple[dict[str, Any], int, int, tuple[bool, int, int, tuple[str, ...]]]] = [
    ({}, 1, 0, (False, 1, 1, ())),
    ({}, 2, 0, (True, 1, 2, ())),
    ({}, 2, 8, (True, 8, 16, ())),
    ({"sagemaker_use_mpi": True}, 1, 0, (True, 1, 1, ())),
    ({"sagemaker_use_mpi": "true"}, 1, 4, (True, 4, 4, ())),
    ({"sagemaker_use_mpi": False}, 3, 0, (False, 1, 3, ())),
    ({"sagemaker_use_mpi": True, "sagemaker_process_slots_per_host": 2}, 1, 0, (True, 2, 2, ())),
    ({"sagemaker_num_processes": 3, "sagemaker_process_slots_per_host": 2}, 2, 0, (True, 2, 3, ())),
    (
        {"sagemaker_use_mpi": True, "sagemaker_additional_mpi_options": "-x FOO=1 --mca a 'b c'"},
        1,
        0,
        (True, 1, 1, ("-x", "FOO=1", "--mca", "a", "b c")),
    ),
    # The toolkits' --NCCL_DEBUG option becomes -x NCCL_DEBUG=...; it is not passed raw.
    (
        {"sagemaker_use_mpi": True, "sagemaker_additional_mpi_options": "--NCCL_DEBUG WARN -x A"},
        1,
        0,
        (True, 1, 1, ("-x", "A")),
    ),
]


@pytest.mark.parametrize(("reserved", "hosts", "gpus", "expected"), DECISIONS)
def test_decision_rule_and_defaults(
    reserved: dict[str, Any], hosts: int, gpus: int, expected: tuple[Any, ...]
) -> None:
    s = resolve_mpi(reserved, num_hosts=hosts, num_gpus=gpus)
    assert (s.enabled, s.processes_per_host, s.num_processes, s.additional_options) == expected


def test_bad_mpi_values_are_reported_together() -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_mpi(
            {"sagemaker_num_processes": "many", "sagemaker_process_slots_per_host": -2},
            num_hosts=1,
            num_gpus=0,
        )
    assert len(caught.value.problems) == 2
    assert "sagemaker_num_processes must be a positive integer, got 'many'" in str(caught.value)


def test_multi_host_mpirun_argv_is_complete() -> None:
    argv = mpirun_argv(
        hosts=["algo-1", "algo-2"],
        settings=MpiSettings(True, 8, 16, ("-x", "EXTRA=1")),
        interface="eth0",
        forwarded=["PYTHONPATH", "SM_HOSTS", "AWS_ACCESS_KEY_ID"],
        command=["python", "-m", "mpi4py", "train.py", "--epochs", "1"],
    )
    assert argv == [
        "mpirun",
        "--host", "algo-1:8,algo-2:8",
        "-np", "16",
        "--allow-run-as-root",
        "--tag-output",
        "-mca", "btl_tcp_if_include", "eth0",
        "-mca", "oob_tcp_if_include", "eth0",
        "-mca", "plm_rsh_no_tree_spawn", "1",
        "-bind-to", "none",
        "-map-by", "slot",
        "-mca", "pml", "ob1",
        "-mca", "btl", "^openib",
        "-mca", "orte_abort_on_non_zero_status", "1",
        "-x", "NCCL_SOCKET_IFNAME=eth0",
        "-x", "NCCL_DEBUG=INFO",
        "-x", "PATH",
        "-x", "LD_LIBRARY_PATH",
        "-x", "PYTHONPATH",
        "-x", "SM_HOSTS",
        "-x", "AWS_ACCESS_KEY_ID",
        "-x", "EXTRA=1",
        "python", "-m", "mpi4py", "train.py", "--epochs", "1",
    ]  # fmt: skip


def test_one_slot_per_host_omits_the_count_and_nccl_debug_is_overridable() -> None:
    argv = mpirun_argv(
        hosts=["algo-1", "algo-2"],
        settings=MpiSettings(True, 1, 2, ()),
        interface="ens5",
        forwarded=[],
        command=["x"],
        nccl_debug="WARN",
    )
    assert argv[argv.index("--host") + 1] == "algo-1,algo-2"
    assert "NCCL_DEBUG=WARN" in argv
    assert "NCCL_SOCKET_IFNAME=ens5" in argv


def test_single_host_never_depends_on_its_host_name_or_eth0() -> None:
    argv = mpirun_argv(
        hosts=["algo-1"],
        settings=MpiSettings(True, 2, 2, ()),
        interface="eth0",
        forwarded=[],
        command=["x"],
    )
    assert argv[argv.index("--host") + 1] == "localhost:2"
    assert "algo-1" not in " ".join(argv)
    assert "eth0" not in argv


def test_forwarded_variables_are_sm_pythonpath_and_credentials_when_set() -> None:
    environ = {
        "SM_HPS": "{}",
        "PYTHONPATH": "/opt/ml/code",
        "AWS_SECRET_ACCESS_KEY": "s",
        "HOME": "/root",
        "SMX": "no",
    }
    assert forwarded_env_names(environ) == ["AWS_SECRET_ACCESS_KEY", "PYTHONPATH", "SM_HPS"]


def test_local_mode_runs_every_hosts_processes_on_this_machine() -> None:
    argv = mpirun_argv(
        hosts=["algo-1", "algo-2"],
        settings=MpiSettings(True, 1, 2, ()),
        interface="eth0",
        forwarded=[],
        command=["x"],
        all_local=True,
    )
    assert argv[argv.index("--host") + 1] == "localhost:2"
    assert argv[argv.index("-np") + 1] == "2"
    assert "btl_tcp_if_include" in argv
    assert argv[argv.index("btl_tcp_if_include") + 1] == "lo"


@pytest.mark.parametrize(
    ("options", "expected"),
    [("--NCCL_DEBUG WARN", "WARN"), ("-x A=1 --NCCL_DEBUG=TRACE", "TRACE"), ("-x A=1", "INFO")],
)
def test_nccl_debug_option_becomes_an_exported_variable(options: str, expected: str) -> None:
    settings = resolve_mpi(
        {"sagemaker_use_mpi": True, "sagemaker_additional_mpi_options": options},
        num_hosts=1,
        num_gpus=0,
    )
    argv = mpirun_argv(
        hosts=["algo-1"], settings=settings, interface="eth0", forwarded=[], command=["x"]
    )
    assert f"NCCL_DEBUG={expected}" in argv
    assert "--NCCL_DEBUG" not in " ".join(argv)


@pytest.mark.parametrize(
    ("reserved", "hosts", "gpus", "message"),
    [
        (
            {"sagemaker_num_processes": 5, "sagemaker_process_slots_per_host": 2},
            2,
            0,
            "sagemaker_num_processes=5 is more than the 4 slots of this job (2 host(s) x 2 per "
            "host, from sagemaker_process_slots_per_host)",
        ),
        (
            {"sagemaker_use_mpi": True, "sagemaker_num_processes": 2},
            1,
            0,
            "more than the 1 slots of this job (1 host(s) x 1 per host, from 1 without GPUs)",
        ),
        (
            {"sagemaker_use_mpi": True, "sagemaker_additional_mpi_options": "--NCCL_DEBUG"},
            1,
            0,
            "--NCCL_DEBUG needs a value",
        ),
    ],
)
def test_impossible_mpi_settings_are_configuration_errors(
    reserved: dict[str, Any], hosts: int, gpus: int, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_mpi(reserved, num_hosts=hosts, num_gpus=gpus)
    assert message in str(caught.value)


def test_multi_host_ranks_get_their_own_hosts_values_not_the_masters() -> None:
    environ = {
        "SM_HPS": "{}",
        "SM_CURRENT_HOST": "algo-1",
        "CURRENT_HOST": "algo-1",
        "SM_TRAINING_ENV": "{}",
        "SM_RESOURCE_CONFIG": "{}",
        "SM_NUM_CPUS": "2",
        "SM_NUM_GPUS": "0",
        "CHAINER_SAGEMAKER_RANK_HOST_ENV": "1",
    }
    names = forwarded_env_names(environ, multi_host=True)
    assert names == ["CHAINER_SAGEMAKER_RANK_HOST_ENV", "SM_HPS", "SM_NUM_GPUS"]
    assert "SM_CURRENT_HOST" in forwarded_env_names(environ)  # one host: same values anyway
