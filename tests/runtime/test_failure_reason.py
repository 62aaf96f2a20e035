"""The failure reason is honest and fits SageMaker's FailureReason (docs/contract.md §1.7).

At most 1024 UTF-8 bytes in the file (newline included), never a split character, no control
characters but newline and tab; a headline naming the program, how it was launched and how it
ended; then the most useful tail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from jobtree import JobTree
from trainproc import hanging_server

from chainer_sagemaker_runtime.training.outcome import (
    clean_text,
    describe_exit,
    failure_reason,
    write_failure,
)

LIMIT = 1024


def _fits(text: str) -> None:
    assert len(text.encode("utf-8")) <= LIMIT - 1
    text.encode("utf-8").decode("utf-8")  # whole characters only


@pytest.mark.parametrize(
    ("headline", "detail"),
    [
        ("short", ""),
        ("é" * 2000, ""),  # a multibyte headline longer than everything
        ("ExecuteUserScriptError: x", "日本語のエラー " * 500),
        ("ExecuteUserScriptError: x", "😀" * 1000),
        ("h", "a\n" * 5000),
    ],
)
def test_every_reason_fits_in_1024_utf8_bytes_without_split_characters(
    headline: str, detail: str
) -> None:
    reason = failure_reason(headline, detail)
    _fits(reason)
    assert reason.startswith(headline[:10])


def test_the_end_of_a_long_traceback_is_kept() -> None:
    detail = "Traceback (most recent call last):\n" + "  frame\n" * 500 + "ValueError: bad lr 日本"
    reason = failure_reason("ExecuteUserScriptError: train.py (process) exited with code 1", detail)
    _fits(reason)
    assert reason.endswith("ValueError: bad lr 日本")


def test_control_characters_are_stripped_but_newlines_and_tabs_kept() -> None:
    text = clean_text("a\x1b[31mred\x1b[0m\tb\x00c\x07\n10%\r50%\r100%\nend\x7f")
    assert text == "ared\tbc\n100%\nend"


def test_pips_error_lines_are_kept_when_the_whole_does_not_fit() -> None:
    warnings = "\n".join(
        f"WARNING: Retrying (Retry(total={i})) after connection broken" for i in range(60)
    )
    detail = (
        f"{warnings}\nERROR: Could not find a version that satisfies the requirement foo\n"
        "ERROR: No matching distribution found for foo\n"
    )
    reason = failure_reason("CodeError: installing requirements.txt failed", detail)
    _fits(reason)
    assert "ERROR: Could not find a version that satisfies the requirement foo" in reason
    assert "ERROR: No matching distribution found for foo" in reason


def test_configuration_problems_are_kept_from_the_start() -> None:
    detail = "\n".join(f"  - problem {i}: fix it like this" for i in range(100))
    reason = failure_reason("ConfigError: invalid configuration:", detail, keep="start")
    _fits(reason)
    assert "problem 0:" in reason
    assert "more lines; see the log" in reason


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (3, "exited with code 3"),
        (-9, "was killed by SIGKILL (exit code 137): it may have run out of memory"),
        (137, "exited with code 137 (SIGKILL: it may have run out of memory)"),
        (-15, "was killed by SIGTERM (exit code 143)"),
    ],
)
def test_exit_descriptions(code: int, expected: str) -> None:
    assert describe_exit(code) == expected


def test_the_file_is_guarded_too(tmp_path: Path) -> None:
    write_failure(tmp_path, "ü" * 5000)
    data = (tmp_path / "failure").read_bytes()
    assert len(data) <= LIMIT
    data.decode("utf-8")


# ---------------------------------------------------------------------- end to end
def _script(code_dir: Path, name: str, text: str) -> dict[str, str]:
    (code_dir / name).write_text(text)
    return {"sagemaker_program": name, "sagemaker_submit_directory": str(code_dir)}


@pytest.mark.timeout(120)
def test_an_mpi_rank_raising_names_script_ranks_exit_code_and_its_traceback(
    job: JobTree, code_dir: Path
) -> None:
    hps = _script(
        code_dir,
        "rank.py",
        "import sys, time\nfrom mpi4py import MPI\n"
        "rank = MPI.COMM_WORLD.Get_rank()\n"
        "print('noise from rank', rank, 'ünïcödé ' * 40, file=sys.stderr, flush=True)\n"
        "if rank == 1:\n"
        "    raise RuntimeError('rank one lost its data: 日本語')\n"
        "time.sleep(600)\n",
    )
    job.configure({**hps, "sagemaker_use_mpi": True, "sagemaker_process_slots_per_host": 2})
    result = job.train(timeout=90)
    assert result.returncode != 0
    reason = job.failure()
    assert len(reason.encode()) <= LIMIT
    headline = reason.splitlines()[0]
    assert headline.startswith("ExecuteUserScriptError: rank.py under mpirun (2 ranks on 1 host)")
    assert "rank 1 on algo-1 exited with code 1" in headline
    assert "--allow-run-as-root" not in reason  # the mpirun command is in the log only
    assert "--allow-run-as-root" in result.stderr
    assert "Traceback (most recent call last)" in reason
    assert "RuntimeError: rank one lost its data: 日本語" in reason


@pytest.mark.timeout(120)
def test_pip_with_no_reachable_index_keeps_the_error_lines(job: JobTree, code_dir: Path) -> None:
    with hanging_server() as (port, _):
        pass  # closed again: nothing listens on the port any more
    (code_dir / "requirements.txt").write_text(
        f"--index-url http://127.0.0.1:{port}/simple\nno-such-dist-for-test\n"
    )
    job.configure(_script(code_dir, "never.py", ""))
    result = job.train(timeout=90, PIP_RETRIES="1")
    assert result.returncode == 1
    reason = job.failure()
    assert len(reason.encode()) <= LIMIT
    assert "ERROR: No matching distribution found for no-such-dist-for-test" in reason


def test_killed_by_sigkill_suggests_memory(job: JobTree, code_dir: Path) -> None:
    hps = _script(code_dir, "oom.py", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    result = job.configure(hps).train()
    assert result.returncode == 137
    assert job.failure().splitlines()[0] == (
        "ExecuteUserScriptError: oom.py (process) was killed by SIGKILL (exit code 137): "
        "it may have run out of memory"
    )


def test_bad_configuration_lists_every_problem(job: JobTree) -> None:
    job.configure(
        {
            "sagemaker_program": "x.py",
            "sagemaker_use_mpi": True,
            "sagemaker_num_processes": 4,
            "sagemaker_process_slots_per_host": 1,
            "sagemaker_additional_mpi_options": "--NCCL_DEBUG",
        }
    )
    result = job.train()
    assert result.returncode == 2
    reason = job.failure()
    assert "sagemaker_num_processes=4 is more than the 1 slots" in reason
    assert "--NCCL_DEBUG needs a value" in reason
