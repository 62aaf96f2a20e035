"""How many GPUs and CPUs this host has (docs/contract.md §1.8)."""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["count_cpus", "count_gpus"]


def count_gpus(nvidia_smi: str = "nvidia-smi") -> int:
    """Lines of ``nvidia-smi --list-gpus`` that start with ``GPU ``; 0 without nvidia-smi."""
    exe = shutil.which(nvidia_smi)
    if exe is None:
        return 0
    try:
        out = subprocess.run(
            [exe, "--list-gpus"], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if out.returncode != 0:
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def count_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
