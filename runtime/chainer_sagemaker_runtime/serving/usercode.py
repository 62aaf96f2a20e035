"""Find, fetch and import the user's inference module (docs/contract.md §3.1).

Runs once, in the parent, before any worker is forked: the download and ``pip install`` happen
once per container instead of once per worker (the old server installed lazily on the first
request), and an import error stops start-up with the user's traceback instead of a loop of 500s.
The module is imported under its own name, so its ``if __name__ == "__main__"`` block is skipped.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

from chainer_sagemaker_runtime.code import fetch_code, install_requirements
from chainer_sagemaker_runtime.errors import CodeError
from chainer_sagemaker_runtime.serving.config import ServingConfig

__all__ = ["import_user_module", "locate_code"]


def locate_code(config: ServingConfig) -> Path:
    """The directory that holds ``SAGEMAKER_PROGRAM``, fetching it there first when remote."""
    location = config.submit_directory
    if location.startswith("file://"):
        location = urlparse(location).path
    if location and not location.startswith("s3://") and Path(location).is_dir():
        code_dir = Path(location)  # used in place: nothing to copy for a local directory
    else:
        code_dir = fetch_code(location or None, config.code_dir, region=config.region)
    if not (code_dir / config.program).is_file():
        bundled = config.model_dir / "code"
        if (bundled / config.program).is_file():  # model.tar.gz may carry its own code/
            return bundled
        raise CodeError(
            f"SAGEMAKER_PROGRAM={config.program!r} is not in the code directory {code_dir} "
            f"(from SAGEMAKER_SUBMIT_DIRECTORY={config.submit_directory or '(unset)'!r}) nor in "
            f"{bundled}; check both variables"
        )
    return code_dir


def import_user_module(config: ServingConfig) -> ModuleType:
    """Fetch the code, install its requirements once, and import the entry module."""
    code_dir = locate_code(config)
    install_requirements(code_dir)
    path = code_dir / config.program
    name = path.stem if path.suffix == ".py" else path.name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CodeError(f"cannot import {path}: SAGEMAKER_PROGRAM must be a Python file")
    if str(code_dir) not in sys.path:
        sys.path.insert(0, str(code_dir))  # so the module's own sibling imports work
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as exc:
        sys.modules.pop(name, None)
        detail = "".join(traceback.format_exception(exc)).rstrip()
        raise CodeError(f"importing the inference module {path} failed:\n{detail}") from exc
    return module
