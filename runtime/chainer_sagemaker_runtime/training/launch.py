"""What command runs the user's entry point (docs/contract.md §1.6), and its environment.

A non-Python entry point runs as a command; one that is neither an ELF binary nor starts with
``#!`` (a shell script without a shebang) runs through ``/bin/sh``, as the SageMaker toolkits
and ``execvp``'s ENOEXEC rule do. The choice is made from the file's first bytes, because under
mpirun the exec happens on every rank, where ``train`` could not retry it.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from chainer_sagemaker_runtime._proc import format_command, run_checked
from chainer_sagemaker_runtime.environment import TrainingEnv
from chainer_sagemaker_runtime.errors import CodeError, ConfigError

__all__ = ["Entry", "child_environ", "resolve_entry"]


@dataclass(frozen=True)
class Entry:
    """How to start the user's code: ``kind`` is script, module or command."""

    kind: str
    target: str
    shell: bool = False

    def argv(
        self, args: Sequence[str], *, python: str = sys.executable, mpi: bool = False
    ) -> list[str]:
        if self.kind == "command":
            return ["/bin/sh", self.target, *args] if self.shell else [self.target, *args]
        prefix = [python, "-m", "mpi4py"] if mpi else [python]
        if self.kind == "module":
            return [*prefix, "-m", self.target, *args]
        return [*prefix, self.target, *args]


def resolve_entry(env: TrainingEnv, code_dir: Path, *, python: str = sys.executable) -> Entry:
    """Pick the launch form; installs a code dir that has setup.py (then runs it as a module)."""
    program = env.user_entry_point
    if not program:
        raise ConfigError(
            [
                "hyperparameter sagemaker_program is missing: set it to the entry point file "
                "(for example train.py), as the SageMaker SDK's entry_point does"
            ]
        )
    path = code_dir / program
    if not path.is_file():
        found = sorted(p.name for p in code_dir.iterdir())[:20] if code_dir.is_dir() else []
        what = "is not a file" if path.exists() else "does not exist"
        raise CodeError(
            f"entry point {program!r} (sagemaker_program) {what} in the code directory "
            f"{code_dir}; it holds {found}. Check entry_point and source_dir."
        )
    if program.endswith(".py"):
        if (code_dir / "setup.py").is_file():
            _pip_install_code(code_dir, python)
            return Entry("module", program[:-3].replace("/", "."))
        return Entry("script", program)
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return Entry("command", str(path), shell=needs_shell(path))


def needs_shell(path: Path) -> bool:
    """True for a file the kernel would refuse with ENOEXEC: no ``#!`` and not ELF."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return not (head.startswith(b"#!") or head == b"\x7fELF")


def _pip_install_code(code_dir: Path, python: str) -> None:
    argv = [python, "-m", "pip", "install", "--disable-pip-version-check", "."]
    code, tail = run_checked(argv, cwd=code_dir)
    if code != 0:
        raise CodeError(
            f"installing the code directory as a package failed (`{format_command(argv)}` exited "
            f"with code {code}); fix setup.py. pip said:\n{tail}"
        )


def child_environ(
    env: TrainingEnv, code_dir: Path, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The user process's environment: ours, plus SM_* and the code dir first on PYTHONPATH."""
    environ = dict(os.environ if base is None else base)
    environ.update(env.to_env_vars())
    parts = [str(code_dir)] + [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(parts))
    environ.setdefault("LD_LIBRARY_PATH", "")
    environ.setdefault("PYTHONUNBUFFERED", "1")
    return environ
