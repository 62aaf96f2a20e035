"""Every job ends with an honest outcome: failure files, exit codes, signals
(docs/contract.md §1.7)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jobtree import BIN, JobTree


def _script(code_dir: Path, name: str, text: str) -> dict[str, str]:
    (code_dir / name).write_text(text)
    return {"sagemaker_program": name, "sagemaker_submit_directory": str(code_dir)}


def test_raising_script_writes_a_failure_naming_the_command_and_error(
    job: JobTree, code_dir: Path
) -> None:
    hps = _script(code_dir, "boom.py", "raise ValueError('the learning rate is negative')\n")
    result = job.configure({**hps, "lr": -1}).train()
    assert result.returncode == 1
    reason = job.failure()
    assert reason.startswith("ExecuteUserScriptError: boom.py (process) exited with code 1\n")
    assert "ValueError: the learning rate is negative" in reason
    assert "boom.py --lr -1" in result.stderr  # the full command goes to the log
    assert len(reason.encode()) <= 1024
    assert not (job.output / "success").exists()


def test_exit_code_of_the_script_is_the_exit_code_of_the_job(job: JobTree, code_dir: Path) -> None:
    hps = _script(code_dir, "quit.py", "import sys; sys.exit(7)\n")
    assert job.configure(hps).train().returncode == 7
    assert "exited with code 7" in job.failure()


@pytest.mark.timeout(120)
def test_a_rank_that_raises_ends_the_whole_mpi_job_promptly(job: JobTree, code_dir: Path) -> None:
    hps = _script(
        code_dir,
        "rank.py",
        "import time\nfrom mpi4py import MPI\n"
        "if MPI.COMM_WORLD.Get_rank() == 1:\n"
        "    raise RuntimeError('rank one lost its data')\n"
        "time.sleep(600)\n",
    )
    job.configure({**hps, "sagemaker_use_mpi": True, "sagemaker_process_slots_per_host": 2})
    started = time.monotonic()
    result = job.train(timeout=90)
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 60, f"the job took {elapsed:.0f} s to end after a rank failed"
    reason = job.failure()
    assert "mpirun" in reason
    assert "rank one lost its data" in reason


def test_bad_requirements_fail_the_job_with_pips_reason(job: JobTree, code_dir: Path) -> None:
    (code_dir / "requirements.txt").write_text("./no-such-package-1.0-py3-none-any.whl\n")
    hps = _script(code_dir, "ok.py", "print('never runs')\n")
    result = job.configure(hps).train()
    assert result.returncode == 1
    reason = job.failure()
    assert "installing requirements.txt failed" in reason
    assert "no-such-package" in reason
    assert "never runs" not in result.stdout


def test_malformed_config_file_fails_clearly(job: JobTree) -> None:
    job.configure({"sagemaker_program": "x.py"})
    (job.base / "input" / "config" / "resourceconfig.json").write_text('{"hosts": "algo-1"')
    result = job.train()
    assert result.returncode == 2
    assert "resourceconfig.json: not valid JSON" in job.failure()


def test_missing_entry_point_names_the_file_and_what_is_there(job: JobTree, code_dir: Path) -> None:
    (code_dir / "other.py").write_text("")
    job.configure({"sagemaker_program": "train.py", "sagemaker_submit_directory": str(code_dir)})
    assert job.train().returncode == 1
    assert (
        "entry point 'train.py' (sagemaker_program) does not exist in the code directory"
        in job.failure()
    )
    assert "other.py" in job.failure()


@pytest.mark.timeout(60)
def test_sigterm_reaches_the_user_script(job: JobTree, code_dir: Path) -> None:
    marker = job.base / "got-sigterm"
    ready = job.base / "ready"
    hps = _script(
        code_dir,
        "long.py",
        "import signal, sys, time, pathlib\n"
        "def stop(signum, frame):\n"
        f"    pathlib.Path({str(marker)!r}).write_text('checkpointed')\n"
        "    sys.exit(3)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(120)\n",
    )
    job.configure(hps)
    proc = subprocess.Popen([str(BIN / "train")], env=job.env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), "the script never started"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 3
    assert marker.read_text() == "checkpointed"
    assert "exited with code 3" in job.failure()


@pytest.mark.timeout(60)
def test_a_script_ignoring_sigterm_is_killed_after_the_grace_period(
    job: JobTree, code_dir: Path
) -> None:
    ready = job.base / "ready"
    hps = _script(
        code_dir,
        "stubborn.py",
        "import signal, time, pathlib\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(120)\n",
    )
    job.configure(hps)
    env = job.env(SAGEMAKER_SIGTERM_GRACE_SECONDS="1")
    proc = subprocess.Popen([str(BIN / "train")], env=env, stderr=subprocess.DEVNULL)
    while not ready.exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGKILL
    reason = job.failure()
    assert "was killed by SIGKILL (exit code 137) 1 s after SIGTERM" in reason
    assert "memory" not in reason  # train killed it: no out-of-memory hint


def test_non_python_entry_point_runs_as_a_command(job: JobTree, code_dir: Path) -> None:
    out = job.base / "model" / "args.txt"
    hps = _script(code_dir, "run.sh", f'#!/bin/sh\necho "$@ $SM_HP_EPOCHS" > {out}\n')
    result = job.configure({**hps, "epochs": 2}).train()
    assert result.returncode == 0, result.stderr
    assert out.read_text().strip() == "--epochs 2 2"


def test_shell_entry_point_without_shebang_runs_through_bin_sh(
    job: JobTree, code_dir: Path
) -> None:
    out = job.base / "model" / "args.txt"
    hps = _script(code_dir, "run", f'echo "$@" > {out}\n')
    result = job.configure({**hps, "epochs": 3}).train()
    assert result.returncode == 0, result.stderr
    assert out.read_text().strip() == "--epochs 3"


def test_an_entry_point_that_cannot_be_executed_is_a_code_error(
    job: JobTree, code_dir: Path
) -> None:
    (code_dir / "run").write_bytes(b"\x7fELF" + b"\0" * 60)  # ELF magic, not a real binary
    hps = {"sagemaker_program": "run", "sagemaker_submit_directory": str(code_dir)}
    assert job.configure(hps).train().returncode == 1
    assert job.failure().startswith("CodeError: could not start the entry point run: ")


def test_working_directory_and_sys_path_are_the_code_dir(job: JobTree, code_dir: Path) -> None:
    (code_dir / "helper.py").write_text("VALUE = 42\n")
    hps = _script(
        code_dir,
        "main.py",
        "import os, sys, helper\n"
        "assert helper.VALUE == 42\n"
        "open(os.path.join(os.environ['SM_MODEL_DIR'], 'cwd'), 'w').write(os.getcwd())\n",
    )
    assert job.configure(hps).train().returncode == 0
    assert (job.model / "cwd").read_text() == str(job.base / "code")


def test_train_imports_quickly_without_heavy_modules() -> None:
    code = (
        "import sys, chainer_sagemaker_runtime.training.cli\n"
        "heavy = {'numpy', 'boto3', 'chainer'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
