"""SIGTERM in every phase of `train` is an orderly stop (docs/contract.md §1.7), also as PID 1.

Real processes and real signals: pip against a loopback index that never answers, a large
archive being extracted, the spawn window, the SSH waits of a multi-host job (in a network
namespace of its own, so its sshd binds port 22 there only).
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from jobtree import JobTree
from trainproc import (
    TrainProc,
    assert_nothing_left,
    children_of,
    hanging_server,
    wait_until,
)

pytestmark = pytest.mark.timeout(120)


def _script(code_dir: Path, name: str, text: str) -> dict[str, str]:
    (code_dir / name).write_text(text)
    return {"sagemaker_program": name, "sagemaker_submit_directory": str(code_dir)}


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
def test_sigterm_during_pip_stops_pip_and_names_the_phase(
    job: JobTree, code_dir: Path, pid1: bool
) -> None:
    with hanging_server() as (port, accepted):
        (code_dir / "requirements.txt").write_text(
            f"--index-url http://127.0.0.1:{port}/simple\nno-such-dist-for-test\n"
        )
        hps = _script(code_dir, "never.py", "raise SystemExit('never runs')\n")
        job.configure(hps)
        train = TrainProc(job.env(PIP_DEFAULT_TIMEOUT="60"), pid1=pid1)
        wait_until(lambda: accepted, 60, "pip to connect to the index")
        train.signal(signal.SIGTERM)
        assert train.wait(30) == 143
    assert job.failure().strip() == "stopped by SIGTERM during pip install of requirements.txt"
    assert_nothing_left(str(code_dir / "requirements.txt"))


def test_pip_gets_an_overall_time_limit(job: JobTree, code_dir: Path) -> None:
    with hanging_server() as (port, _accepted):
        (code_dir / "requirements.txt").write_text(
            f"--index-url http://127.0.0.1:{port}/simple\nno-such-dist-for-test\n"
        )
        job.configure(_script(code_dir, "never.py", ""))
        train = TrainProc(job.env(PIP_DEFAULT_TIMEOUT="60", SAGEMAKER_PIP_TIMEOUT_SECONDS="2"))
        assert train.wait(60) == 1
    reason = job.failure()
    assert reason.startswith(
        "pip install of requirements.txt (SAGEMAKER_PIP_TIMEOUT_SECONDS=2 s): time limit exceeded"
    )
    assert_nothing_left(str(code_dir / "requirements.txt"))


def _archive(path: Path, mib: int, script: bytes = b"") -> Path:
    """A gzip tar that takes a while to extract: ``mib`` 1 MiB files (stored, quick to build)
    and ``train.py``."""
    chunk = os.urandom(1 << 20)
    with gzip.open(path, "wb", compresslevel=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        for i in range(mib):
            info = tarfile.TarInfo(f"data/part-{i:03d}.bin")
            info.size = len(chunk)
            tar.addfile(info, io.BytesIO(chunk))
        info = tarfile.TarInfo("train.py")
        info.size = len(script)
        tar.addfile(info, io.BytesIO(script))
    return path


@pytest.fixture(scope="module")
def big_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _archive(tmp_path_factory.mktemp("archive") / "sourcedir.tar.gz", 100)


@pytest.fixture(scope="module")
def sleeper_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "sourcedir.tar.gz"
    return _archive(path, 48, b"import time\ntime.sleep(30)\n")


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
def test_sigterm_during_extraction_stops_at_once(
    job: JobTree, big_archive: Path, pid1: bool
) -> None:
    job.configure({"sagemaker_program": "train.py", "sagemaker_submit_directory": str(big_archive)})
    train = TrainProc(job.env(), pid1=pid1)
    train.wait_for("[train] code fetch and extraction of")
    time.sleep(0.1)
    asked = time.monotonic()
    train.signal(signal.SIGTERM)
    assert train.wait(30) == 143
    assert time.monotonic() - asked < 5
    assert job.failure().strip() == (
        f"stopped by SIGTERM during code fetch and extraction of {big_archive}"
    )
    assert not (job.base / "code" / "train.py").exists(), "a stopped extraction left code behind"


@pytest.mark.parametrize("pid1", [False, True], ids=["process", "pid1"])
def test_sigterm_in_the_spawn_window_always_ends_orderly(
    job: JobTree, sleeper_archive: Path, pid1: bool
) -> None:
    """Signals sent across the moments around the script's start (from the first log line,
    when the handler exists, to the script running): every run ends with exit 143, a failure
    file naming SIGTERM, and nothing it started left behind."""
    job.configure(
        {"sagemaker_program": "train.py", "sagemaker_submit_directory": str(sleeper_archive)}
    )
    reasons = []
    for delay in [0.0, 0.03, 0.06, 0.1, 0.15, 0.25]:
        for name in ("success", "failure"):
            (job.output / name).unlink(missing_ok=True)
        train = TrainProc(job.env(), pid1=pid1)
        train.wait_for("[train] code fetch")
        time.sleep(delay)
        train.signal(signal.SIGTERM)
        assert train.wait(30) == 143, train.stderr
        reasons.append(job.failure())
        assert "SIGTERM" in reasons[-1], reasons[-1]
        assert_nothing_left(str(job.base))
    # The window is crossed: early signals stop a phase, late ones reach the running script.
    assert any(r.startswith("stopped by SIGTERM during") for r in reasons), reasons


@pytest.mark.parametrize("role", ["master", "worker"])
def test_sigterm_during_the_ssh_wait(job: JobTree, code_dir: Path, role: str) -> None:
    """A multi-host job whose other host never comes: stopped while waiting, sshd stopped too."""
    hps = _script(code_dir, "train.py", "")
    job.configure(
        hps, hosts=["algo-1", "algo-2"], current_host="algo-1" if role == "master" else "algo-2"
    )
    train = TrainProc(job.env(SAGEMAKER_MPI_WAIT_SECONDS="60"), pid1=True, net=True)
    train.wait_for("[train] the SSH wait for")
    inner = train.train_pid()
    sshd = [p for p in children_of(inner) if Path(f"/proc/{p}/comm").read_text().strip() == "sshd"]
    assert sshd, "train should have started sshd"
    train.signal(signal.SIGTERM)
    assert train.wait(30) == 143
    other = "algo-2" if role == "master" else "the master algo-1"
    assert job.failure().strip() == f"stopped by SIGTERM during the SSH wait for {other}"
    assert "stopping" in train.stderr


def test_pid1_reaps_orphans_and_passes_sigterm_to_the_script(job: JobTree, code_dir: Path) -> None:
    ready = job.base / "ready"
    hps = _script(
        code_dir,
        "orphans.py",
        "import os, pathlib, signal, sys, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"  # a child that leaves a grandchild behind and exits
        "        if os.fork() == 0:\n"
        "            time.sleep(0.2)\n"
        "            os._exit(0)\n"
        "        os._exit(0)\n"
        "    os.wait()\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n",
    )
    job.configure(hps)
    train = TrainProc(job.env(), pid1=True)
    wait_until(ready.exists, 30, "the script to start")
    inner = train.train_pid()

    def zombies() -> list[int]:
        return [
            p
            for p in children_of(inner)
            if Path(f"/proc/{p}/stat").read_bytes().rpartition(b")")[2].split()[0] == b"Z"
        ]

    time.sleep(1.5)
    assert zombies() == [], "PID 1 left its adopted children as zombies"
    train.signal(signal.SIGTERM)
    assert train.wait(30) == 0
    assert (job.output / "success").exists()


def test_a_second_signal_does_not_restart_the_stop(job: JobTree, code_dir: Path) -> None:
    marker = job.base / "stopped-once"
    ready = job.base / "ready"
    hps = _script(
        code_dir,
        "slow_stop.py",
        "import pathlib, signal, sys, time\n"
        "def stop(*_):\n"
        f"    with open({str(marker)!r}, 'a') as f: f.write('x')\n"
        "    time.sleep(1)\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, stop)\n"
        f"pathlib.Path({str(ready)!r}).touch()\n"
        "time.sleep(60)\n",
    )
    job.configure(hps)
    train = TrainProc(job.env())
    wait_until(ready.exists, 30, "the script to start")
    train.signal(signal.SIGTERM)
    time.sleep(0.2)
    train.signal(signal.SIGINT)
    assert train.wait(30) == 0
    assert marker.read_text() == "x"


def test_when_the_script_exits_the_rest_of_its_group_is_ended(job: JobTree, code_dir: Path) -> None:
    hps = _script(
        code_dir,
        "leaves_helpers.py",
        "import subprocess\nsubprocess.Popen(['sleep', '600.4242'])\n",  # not waited for
    )
    result = job.configure(hps).train(timeout=60)
    assert result.returncode == 0, result.stderr
    assert_nothing_left("600.4242")


_ENTRY_PROBE = """
import signal, sys
from importlib.metadata import entry_points

seen = []

def hook(event, args):
    if event == "import" and args[0] == "chainer_sagemaker_runtime.training.cli" and not seen:
        seen.append(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL)

sys.addaudithook(hook)
(train,) = entry_points(group="console_scripts", name="train")
main = train.load()
try:
    main(["--no-such-option"])
except SystemExit:
    pass
print(seen)
"""


def test_the_train_entry_point_holds_a_sigterm_before_importing_the_command() -> None:
    """As PID 1 a signal without a handler is dropped: `train`'s console script has a SIGTERM
    handler before it imports the command's modules (tens of milliseconds of imports)."""
    out = subprocess.run(
        [sys.executable, "-c", _ENTRY_PROBE], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip() == "[True]", out.stdout + out.stderr


def test_a_sigterm_held_from_before_the_command_started_stops_the_job(job: JobTree) -> None:
    """What the entry point held is acted on as soon as the stop controller is installed."""
    job.configure({})
    code = "import signal, sys\nfrom chainer_sagemaker_runtime.training.cli import main\n"
    code += "sys.exit(main([], held=[signal.SIGTERM]))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], env=job.env(), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 143, out.stderr
    assert job.failure().strip() == "stopped by SIGTERM during start-up"
