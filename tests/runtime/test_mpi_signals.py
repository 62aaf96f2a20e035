"""SIGTERM reaches every MPI rank with the full grace (docs/contract.md §2), and the straggler
watchdog. Real mpirun, real ChainerMN, real signals.

Open MPI would SIGKILL the ranks about 1 s after mpirun got SIGTERM; `train` signals the ranks'
process groups itself instead, so a checkpoint that takes seconds completes, and a job whose
ranks all exit 0 after SIGTERM is a success.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from jobtree import JobTree
from trainproc import TrainProc, assert_nothing_left, wait_until

pytestmark = pytest.mark.timeout(150)

CHECKPOINTING = """\
import pathlib, signal, sys, time
import chainer, chainermn
import numpy as np

comm = chainermn.create_communicator("naive")
model = chainer.links.Linear(4, 2)
out = pathlib.Path({out!r})

def stop(signum, frame):
    time.sleep({seconds}[comm.rank % 2])  # a slow checkpoint
    chainer.serializers.save_npz(str(out / f"checkpoint-{{comm.rank}}.npz"), model)
    sys.exit(0)

signal.signal(signal.SIGTERM, stop)
(out / f"ready-{{comm.rank}}").touch()
while True:
    time.sleep(0.1)
"""


PLAIN = """\
import pathlib, signal, time
from mpi4py import MPI

rank = MPI.COMM_WORLD.Get_rank()
signal.signal(signal.SIGTERM, lambda *_: time.sleep(600))
(pathlib.Path({out!r}) / f"ready-{{rank}}").touch()
while True:
    time.sleep(0.1)
"""


def _mpi_job(job: JobTree, code_dir: Path, seconds: tuple[float, float] | None) -> None:
    out = job.base / "checkpoints"
    out.mkdir(parents=True)
    text = (
        PLAIN.format(out=str(out))
        if seconds is None
        else CHECKPOINTING.format(out=str(out), seconds=list(seconds))
    )
    (code_dir / "mn.py").write_text(text)
    job.configure(
        {
            "sagemaker_program": "mn.py",
            "sagemaker_submit_directory": str(code_dir),
            "sagemaker_use_mpi": True,
            "sagemaker_process_slots_per_host": 2,
        }
    )


def test_chainermn_ranks_checkpoint_on_sigterm_and_the_job_succeeds(
    job: JobTree, code_dir: Path
) -> None:
    """Default grace (115 s): rank 0's checkpoint takes 3 s, rank 1's 20 s (twenty times Open
    MPI's kill timeout; a full 40 s would double the test's cost and prove nothing more once
    the grace in force is shown to be 115 s). Both complete; the job is a success."""
    seconds = 20
    _mpi_job(job, code_dir, (3, seconds))
    out = job.base / "checkpoints"
    train = TrainProc(job.env())
    wait_until(lambda: len(list(out.glob("ready-*"))) == 2, 90, "both ranks to start")
    train.signal(signal.SIGTERM)
    asked = time.monotonic()
    assert train.wait(seconds + 60) == 0, train.stderr[-3000:]
    took = time.monotonic() - asked
    assert sorted(p.name for p in out.glob("checkpoint-*")) == [
        "checkpoint-0.npz",
        "checkpoint-1.npz",
    ]
    assert (job.output / "success").exists()
    assert took >= seconds
    assert "(grace 115 s)" in train.stderr
    assert_nothing_left(str(code_dir / "mn.py"))


def test_ranks_that_outlive_the_grace_are_killed_and_the_job_fails(
    job: JobTree, code_dir: Path
) -> None:
    _mpi_job(job, code_dir, None)
    out = job.base / "checkpoints"
    train = TrainProc(job.env(SAGEMAKER_SIGTERM_GRACE_SECONDS="2"))
    wait_until(lambda: len(list(out.glob("ready-*"))) == 2, 90, "both ranks to start")
    train.signal(signal.SIGTERM)
    code = train.wait(40)
    assert code != 0
    reason = job.failure()
    assert reason.startswith("ExecuteUserScriptError: mn.py under mpirun (2 ranks on 1 host)")
    assert "2 s after SIGTERM" in reason.splitlines()[0]
    assert_nothing_left(str(code_dir / "mn.py"))


STRAGGLERS = {
    # An mpi4py rank that is done waits in MPI_Finalize: its script's end is what counts.
    "straggle.py": "import os, time\nfrom mpi4py import MPI\n"
    "if MPI.COMM_WORLD.Get_rank() == 1:\n    time.sleep(600)\n",
    "straggle.sh": '#!/bin/sh\nif [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then exec sleep 600; fi\n',
}


@pytest.mark.parametrize("program", sorted(STRAGGLERS))
def test_straggler_watchdog_ends_a_job_whose_other_ranks_went_silent(
    job: JobTree, code_dir: Path, program: str
) -> None:
    (code_dir / program).write_text(STRAGGLERS[program])
    job.configure(
        {
            "sagemaker_program": program,
            "sagemaker_submit_directory": str(code_dir),
            "sagemaker_use_mpi": True,
            "sagemaker_process_slots_per_host": 2,
        }
    )
    started = time.monotonic()
    result = job.train(timeout=60, SAGEMAKER_MPI_STRAGGLER_SECONDS="2")
    assert time.monotonic() - started < 30
    assert result.returncode != 0
    headline = job.failure().splitlines()[0]
    assert "straggler watchdog (SAGEMAKER_MPI_STRAGGLER_SECONDS=2): ranks [1] ran on" in headline
    assert "after ranks [0] exited 0" in headline
    assert_nothing_left(str(code_dir / program))
