"""The script's stderr passes through `train` byte for byte, at once, in bounded memory, and a
broken stream of ours never blocks the script (docs/contract.md §1.6)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from jobtree import BIN, JobTree
from trainproc import TrainProc, wait_until

pytestmark = pytest.mark.timeout(120)


def _script(code_dir: Path, name: str, text: str) -> dict[str, str]:
    (code_dir / name).write_text(text)
    return {"sagemaker_program": name, "sagemaker_submit_directory": str(code_dir)}


def test_carriage_return_progress_reaches_our_stderr_at_once(job: JobTree, code_dir: Path) -> None:
    ready = job.base / "wrote"
    hps = _script(
        code_dir,
        "progress.py",
        "import os, pathlib, sys, time\n"
        "os.write(2, b'\\x1b[1m 10%|#   |\\r')\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(5)\n",
    )
    job.configure(hps)
    train = TrainProc(job.env())
    wait_until(ready.exists, 30, "the script to write its progress")
    wrote = time.monotonic()
    wait_until(lambda: b" 10%|#   |\r" in train.err, 5, "the progress bar to pass through")
    assert time.monotonic() - wrote < 1.0
    assert b"\x1b[1m 10%|#   |\r" in train.err  # byte for byte, escapes and all
    train.signal()
    train.wait(30)


def _vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_a_100_mb_line_keeps_train_small(job: JobTree, code_dir: Path) -> None:
    done = job.base / "done"
    hps = _script(
        code_dir,
        "long_line.py",
        "import os, pathlib, time\n"
        "chunk = b'x' * (1 << 20)\n"
        "for _ in range(100):\n"
        "    os.write(2, chunk)\n"
        "os.write(2, b'\\n')\n"
        f"pathlib.Path({str(done)!r}).touch()\n"
        "time.sleep(3)\n",
    )
    job.configure(hps)
    train = subprocess.Popen(
        [str(BIN / "train")], env=job.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    assert train.stderr is not None
    fd = train.stderr.fileno()
    received = 0
    while received < 100 << 20:
        data = os.read(fd, 1 << 20)
        assert data, "train ended before passing the line on"
        received += data.count(b"x")
    wait_until(done.exists, 30, "the script to finish writing")
    peak_mib = _vm_hwm_kib(train.pid) / 1024
    while os.read(fd, 1 << 20):
        pass
    assert train.wait(30) == 0
    assert peak_mib < 64, f"train peaked at {peak_mib:.0f} MiB for one 100 MB line"


def test_a_closed_stderr_never_hangs_the_job(job: JobTree, code_dir: Path) -> None:
    hps = _script(
        code_dir,
        "chatty.py",
        "import sys\nfor i in range(200000):\n    print('line', i, file=sys.stderr)\n",
    )
    job.configure(hps)
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read what train writes to its stderr
    try:
        train = subprocess.Popen(
            [str(BIN / "train")], env=job.env(), stdout=subprocess.DEVNULL, stderr=write_end
        )
    finally:
        os.close(write_end)
    assert train.wait(timeout=60) == 0
    assert (job.output / "success").exists()
