"""What command runs the user's entry point (CONTRACT.md §1.6.3), and its environment."""

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

    def argv(
        self, args: Sequence[str], *, python: str = sys.executable, mpi: bool = False
    ) -> list[str]:
        if self.kind == "command":
            return [self.target, *args]
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
        raise CodeError(
            f"entry point {program!r} (sagemaker_program) is not in the code directory "
            f"{code_dir}; it holds {found}. Check entry_point and source_dir."
        )
    if program.endswith(".py"):
        if (code_dir / "setup.py").is_file():
            _pip_install_code(code_dir, python)
            return Entry("module", program[:-3].replace("/", "."))
        return Entry("script", program)
    mode = path.stat().st_mode
    path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return Entry("command", str(path))


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
