"""Make Chainer 7.8.1 importable on today's Python stack, with nothing asked of the user.

Chainer 7.8.1 (its last release) breaks at import time in three places:

* NumPy 2 removed ``numpy.sctypes`` (``chainer.functions.array.as_strided``);
* NumPy 2 on Python 3.12+ has no ``numpy.distutils`` (``chainer._environment_check``);
* setuptools 81+ no longer ships ``pkg_resources`` (``chainer._environment_check``).

A ``.pth`` file installed with the runtime calls :func:`install` at interpreter start. That
only puts a finder on ``sys.meta_path``; nothing is imported and nothing is patched until the
first ``import chainer``, when the finder fills exactly the gaps that are present and steps
aside. Real modules are always preferred over the stand-ins. Set
``CHAINER_SAGEMAKER_COMPAT=0`` to switch the hook off.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from typing import Any

__all__ = ["apply", "install"]

_DISABLE_ENV = "CHAINER_SAGEMAKER_COMPAT"


class _ChainerImportFinder:
    """Runs :func:`apply` just before ``chainer`` is first imported; never loads anything."""

    @classmethod
    def find_spec(
        cls,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == "chainer":
            _uninstall()
            apply()
        return None


def install() -> None:
    """Arm the hook (idempotent). Called from the runtime's ``.pth`` file."""
    if os.environ.get(_DISABLE_ENV, "1") == "0":
        return
    if _ChainerImportFinder not in sys.meta_path:
        sys.meta_path.insert(0, _ChainerImportFinder)  # type: ignore[arg-type]


def _uninstall() -> None:
    while _ChainerImportFinder in sys.meta_path:
        sys.meta_path.remove(_ChainerImportFinder)  # type: ignore[arg-type]


def apply() -> None:
    """Fill the gaps that are present in this interpreter; a no-op where none are."""
    _add_numpy_sctypes()
    _add_numpy_distutils_stub()
    _add_pkg_resources_stub()


def _add_numpy_sctypes() -> None:
    import numpy

    if "sctypes" in vars(numpy):
        return
    try:
        getattr(numpy, "sctypes")  # noqa: B009 - NumPy 1.x resolves it lazily
        return
    except AttributeError:
        pass
    sctypes: dict[str, list[type]] = {
        "int": [numpy.int8, numpy.int16, numpy.int32, numpy.int64],
        "uint": [numpy.uint8, numpy.uint16, numpy.uint32, numpy.uint64],
        "float": [numpy.float16, numpy.float32, numpy.float64, numpy.longdouble],
        "complex": [numpy.complex64, numpy.complex128, numpy.clongdouble],
        "others": [bool, object, bytes, str, numpy.void],
    }
    setattr(numpy, "sctypes", sctypes)  # noqa: B010


def _add_numpy_distutils_stub() -> None:
    try:
        import numpy.distutils.system_info

        return
    except Exception:  # noqa: S110 - ImportError, or distutils missing on 3.12: stub it
        pass
    import numpy

    package = types.ModuleType("numpy.distutils")
    package.__path__ = []
    system_info = types.ModuleType("numpy.distutils.system_info")

    def get_info(name: str, notfound_action: int = 0) -> dict[str, Any]:
        """Stand-in: no BLAS build information is known (Chainer only reads it on macOS)."""
        return {}

    system_info.get_info = get_info  # type: ignore[attr-defined]
    package.system_info = system_info  # type: ignore[attr-defined]
    sys.modules["numpy.distutils"] = package
    sys.modules["numpy.distutils.system_info"] = system_info
    setattr(numpy, "distutils", package)  # noqa: B010


def _add_pkg_resources_stub() -> None:
    try:
        import pkg_resources  # noqa: F401

        return
    except ImportError:
        pass
    from chainer_sagemaker_runtime import _pkg_resources_stub

    sys.modules["pkg_resources"] = _pkg_resources_stub
