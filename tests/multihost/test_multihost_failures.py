"""The runtime's multi-host behaviour when something goes wrong, on hosts that are separate
network, PID and mount namespaces (local mode): the failure cases of docs/contract.md §2."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hosttools import STACK, Log, left_behind

from chainer_sagemaker_cdk.local import CloudAssembly, LocalTrainingResult, run_training
from chainer_sagemaker_cdk.local.netns import NamespaceCluster

PROMPTLY = 30.0  # seconds: a failure on one host ends every host within this


def _run(
    assembly: Path,
    job: str,
    work: Path,
    log: Log,
    *,
    act: Callable[[NamespaceCluster], None] | None = None,
    **kwargs: Any,
) -> LocalTrainingResult:
    """Run ``job``; ``act`` runs on a thread with the started cluster (to signal hosts)."""
    errors: list[BaseException] = []

    def on_start(cluster: NamespaceCluster) -> None:
        def target() -> None:
            try:
                assert act is not None
                act(cluster)
            except BaseException as exc:  # reported by the test below
                errors.append(exc)

        threading.Thread(target=target, daemon=True).start()

    spec = CloudAssembly(assembly).training_job(STACK, job)
    result = run_training(spec, {}, work, log=log, on_start=on_start if act else None, **kwargs)
    assert not errors, errors
    return result


def _ended_at(result: LocalTrainingResult, log: Log) -> float:
    """When the last host ended (from the log's report lines' arrival)."""
    return log.wait_for(r"^\[local\] training (succeeded|failed)", timeout=1)


def test_a_rank_failing_on_a_worker_ends_every_host_with_the_reason_on_the_master(
    assembly: Path, tmp_path: Path, log: Log
) -> None:
    result = _run(
        assembly, "Probe3", tmp_path, log, hyperparameters={"mode": "fail", "fail-rank": 2}
    )
    failed_at = log.wait_for("rank 2 failing", timeout=1)
    assert _ended_at(result, log) - failed_at < PROMPTLY, log.text[-4000:]
    assert not result.succeeded
    assert all(o.exit_code is not None for o in result.hosts)
    master = result.hosts[0]
    assert master.outcome == "failure", log.text[-4000:]
    assert master.exit_code == 3, master
    assert master.failure_reason is not None
    assert "rank 2" in master.failure_reason, master.failure_reason
    assert "algo-3" in master.failure_reason, master.failure_reason
    assert left_behind() == []


def test_a_worker_that_never_comes_up_fails_the_master_within_the_wait_naming_it(
    assembly: Path, tmp_path: Path, log: Log
) -> None:
    started = time.monotonic()
    result = _run(
        assembly,
        "Probe2",
        tmp_path,
        log,
        absent_hosts={"algo-2"},
        environment={"SAGEMAKER_MPI_WAIT_SECONDS": "5"},
        hyperparameters={"mode": "report"},
    )
    took = time.monotonic() - started
    assert took < 5 + 15, log.text[-4000:]
    master, worker = result.hosts
    assert worker.exit_code is None  # it never started
    assert master.outcome == "failure"
    assert master.exit_code not in (0, None)
    assert master.failure_reason is not None
    assert "algo-2" in master.failure_reason, master.failure_reason
    assert "running: mpirun" not in log.text


def test_workers_end_within_seconds_when_the_master_goes_away(
    assembly: Path, tmp_path: Path, log: Log
) -> None:
    """The master instance disappears mid-job (its PID 1 killed: its processes, sshd and
    network go with it); the worker must notice, not wait out its 900 s."""
    gone: list[float] = []

    def kill_master(cluster: NamespaceCluster) -> None:
        log.wait_for(r"rank 1 of 2 on algo-2 ready")
        gone.append(time.monotonic())
        cluster.signal("algo-1", signal.SIGKILL)

    result = _run(
        assembly, "Probe2", tmp_path, log, act=kill_master, hyperparameters={"mode": "sleep"}
    )
    assert gone, log.text[-4000:]
    worker = result.hosts[1]
    assert worker.exit_code is not None
    assert _ended_at(result, log) - gone[0] < 15, log.text[-4000:]


def test_sigterm_reaches_every_rank_on_every_host(assembly: Path, tmp_path: Path, log: Log) -> None:
    """StopTrainingJob: SIGTERM to every host's PID 1; every rank's handler runs, and every
    host ends within the grace."""
    stopped: list[float] = []

    def stop(cluster: NamespaceCluster) -> None:
        log.wait_for(r"rank \d of 2 on algo-\d ready", count=2)
        stopped.append(time.monotonic())
        for name in cluster.hosts:
            cluster.signal(name, signal.SIGTERM)

    result = _run(
        assembly,
        "Probe2",
        tmp_path,
        log,
        act=stop,
        hyperparameters={"mode": "sleep"},
        environment={"SAGEMAKER_SIGTERM_GRACE_SECONDS": "10"},
    )
    assert stopped, log.text[-4000:]
    assert log.matching("rank 0 on algo-1 got SIGTERM"), log.text[-4000:]
    assert log.matching("rank 1 on algo-2 got SIGTERM"), log.text[-4000:]
    assert _ended_at(result, log) - stopped[0] < 10 + 10, log.text[-4000:]
    assert all(o.exit_code is not None for o in result.hosts)
    assert result.hosts[0].outcome in ("success", "failure")


def test_more_ranks_than_slots_is_a_configuration_error_before_anything_starts(
    assembly: Path, tmp_path: Path, log: Log
) -> None:
    started = time.monotonic()
    result = _run(
        assembly,
        "Probe2",
        tmp_path,
        log,
        hyperparameters={"mode": "report", "sagemaker_num_processes": 5},
    )
    assert time.monotonic() - started < PROMPTLY, log.text[-4000:]
    master = result.hosts[0]
    assert master.exit_code == 2, log.text[-4000:]
    assert master.outcome == "failure"
    assert master.failure_reason is not None
    assert "sagemaker_num_processes" in master.failure_reason, master.failure_reason
    assert "running: mpirun" not in log.text
    assert all(o.exit_code is not None for o in result.hosts)


def test_a_job_whose_ranks_end_at_once_succeeds_on_every_host(
    assembly: Path, tmp_path: Path, log: Log
) -> None:
    """Ranks that are over before a worker's first look for the master (or for Open MPI's
    daemon) are still a finished job: every worker ends with success, promptly, not with "the
    master went away" nor after its whole wait (bounded here to 60 s so the test cannot hang)."""
    started = time.monotonic()
    result = _run(
        assembly,
        "Probe3",
        tmp_path,
        log,
        hyperparameters={"mode": "exit"},
        environment={"SAGEMAKER_MPI_WAIT_SECONDS": "60"},
    )
    assert [(o.host, o.exit_code, o.outcome) for o in result.hosts] == [
        ("algo-1", 0, "success"),
        ("algo-2", 0, "success"),
        ("algo-3", 0, "success"),
    ], log.text[-4000:]
    assert time.monotonic() - started < PROMPTLY, log.text[-4000:]
