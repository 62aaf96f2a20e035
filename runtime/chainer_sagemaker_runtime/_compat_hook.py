"""Make Chainer 7.8.1 importable on today's Python stack, with nothing asked of the user.

Chainer 7.8.1 (its last release) breaks at import time in three places:

* NumPy 2 removed ``numpy.sctypes`` (``chainer.functions.array.as_strided``);
* NumPy 2 on Python 3.12+ has no ``numpy.distutils`` (``chainer._environment_check``);
* setuptools 81+ no longer ships ``pkg_resources`` (``chainer._environment_check``).

and ChainerMN's ``pure_nccl`` communicator breaks on CuPy 13+, whose ``cupy/carray.cuh`` no
longer brings CUDA's ``half`` type into raw kernels (its parameter packing kernels fail to
compile: seen on an H200 with CuPy 14.2).

A ``.pth`` file installed with the runtime calls :func:`install` at interpreter start. That
only puts a finder on ``sys.meta_path``; nothing is imported and nothing is patched until the
first ``import chainer``, when the finder fills exactly the gaps that are present, and the
first import of ChainerMN's memory utilities, whose two packing kernels then get
``#include <cuda_fp16.h>`` (harmless where ``half`` already exists). Real modules are always
preferred over the stand-ins. Set ``CHAINER_SAGEMAKER_COMPAT=0`` to switch the hook off.

The ``pkg_resources`` and ``numpy.distutils`` stand-ins are Chainer's alone: they sit in
``sys.modules`` only while a module of Chainer or ChainerMN is being executed (the finder
wraps those modules' loaders), so the Chainer modules that import them keep their reference,
while the user's own ``import pkg_resources`` after ``import chainer`` fails exactly as it
would without the hook, and ``try: import pkg_resources`` feature detection keeps working.
``numpy.sctypes`` stays: it is an attribute, not a module anybody probes for.
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


_CHAINERMN_KERNELS = "chainermn.communicators._memory_utility"


_CHAINER_FAMILY = ("chainer", "chainermn")


def _in_family(fullname: str) -> bool:
    return any(fullname == top or fullname.startswith(top + ".") for top in _CHAINER_FAMILY)


class _ChainerImportFinder:
    """Runs :func:`apply` just before ``chainer`` is first imported, wraps the loaders of
    Chainer's modules so the stand-ins exist only while they execute, and patches ChainerMN's
    packing kernels right after their module loads; never loads anything itself."""

    @classmethod
    def find_spec(
        cls,
        fullname: str,
        path: Sequence[str] | None = None,
        target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname == "chainer":
            apply()
        if not _in_family(fullname):
            return None
        if fullname == _CHAINERMN_KERNELS:
            return _spec_patched_after_load(
                fullname, path, target, lambda e: _with_stand_ins(_then_patch(e))
            )
        if not _stand_ins:
            return None  # nothing to hide: leave the import alone
        return _spec_patched_after_load(fullname, path, target, _with_stand_ins)


def _spec_patched_after_load(
    fullname: str, path: Sequence[str] | None, target: types.ModuleType | None, wrap: Any
) -> ModuleSpec | None:
    for finder in sys.meta_path:
        if finder is _ChainerImportFinder or not hasattr(finder, "find_spec"):
            continue
        spec: ModuleSpec | None = finder.find_spec(fullname, path, target)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            continue
        spec.loader.exec_module = wrap(spec.loader.exec_module)  # type: ignore[method-assign]
        return spec
    return None


# name -> stand-in module, filled by apply() with the gaps of this interpreter
_stand_ins: dict[str, types.ModuleType] = {}
_depth = 0  # how many Chainer modules are executing right now (imports nest)


def _with_stand_ins(real_exec: Any) -> Any:
    def exec_module(module: types.ModuleType) -> None:
        global _depth
        if _depth == 0:
            _show_stand_ins()
        _depth += 1
        try:
            real_exec(module)
        finally:
            _depth -= 1
            if _depth == 0:
                _hide_stand_ins()

    return exec_module


def _show_stand_ins() -> None:
    for name, module in _stand_ins.items():
        sys.modules.setdefault(name, module)
    if "numpy.distutils" in _stand_ins and "numpy" in sys.modules:
        sys.modules["numpy"].__dict__.setdefault("distutils", _stand_ins["numpy.distutils"])


def _hide_stand_ins() -> None:
    for name, module in _stand_ins.items():
        if sys.modules.get(name) is module:
            del sys.modules[name]
    stand_in = _stand_ins.get("numpy.distutils")
    numpy = sys.modules.get("numpy")
    if stand_in is not None and numpy is not None and vars(numpy).get("distutils") is stand_in:
        delattr(numpy, "distutils")


def _then_patch(real_exec: Any) -> Any:
    def exec_module(module: types.ModuleType) -> None:
        real_exec(module)
        _patch_chainermn_kernels(module)

    return exec_module


def _with_fp16(code: str) -> str:
    if "half" not in code or "cuda_fp16.h" in code:
        return code
    return "#include <cuda_fp16.h>\n" + code


def _patch_chainermn_kernels(module: types.ModuleType) -> None:
    def fixed(make_kernel: Any) -> Any:
        def build() -> Any:
            cuda = module.chainer.backends.cuda
            raw = cuda.raw
            cuda.raw = lambda code, name, *a, **k: raw(_with_fp16(code), name, *a, **k)
            try:
                return make_kernel()
            finally:
                cuda.raw = raw

        return build

    for name in ("_cupy_batched_pack_params", "_cupy_batched_unpack_params"):
        if callable(getattr(module, name, None)):
            setattr(module, name, fixed(getattr(module, name)))


def install() -> None:
    """Arm the hook (idempotent). Called from the runtime's ``.pth`` file."""
    if os.environ.get(_DISABLE_ENV, "1") == "0":
        return
    if _ChainerImportFinder not in sys.meta_path:
        sys.meta_path.insert(0, _ChainerImportFinder)  # type: ignore[arg-type]


_applied = False


def apply() -> None:
    """Fill the gaps that are present in this interpreter; a no-op where none are."""
    global _applied
    if _applied:
        return
    _applied = True
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
    import warnings

    try:
        with warnings.catch_warnings():  # NumPy 1.23+ warns that numpy.distutils is deprecated
            warnings.simplefilter("ignore", DeprecationWarning)
            import numpy.distutils.system_info  # noqa: F401 - probing for the real one
        return
    except Exception:  # noqa: S110 - ImportError, or distutils missing on 3.12: stub it
        pass
    package = types.ModuleType("numpy.distutils")
    package.__path__ = []
    system_info = types.ModuleType("numpy.distutils.system_info")

    def get_info(name: str, notfound_action: int = 0) -> dict[str, Any]:
        """Stand-in: no BLAS build information is known (Chainer only reads it on macOS)."""
        return {}

    system_info.get_info = get_info  # type: ignore[attr-defined]
    package.system_info = system_info  # type: ignore[attr-defined]
    _stand_ins["numpy.distutils"] = package
    _stand_ins["numpy.distutils.system_info"] = system_info


def _add_pkg_resources_stub() -> None:
    import warnings

    try:
        with warnings.catch_warnings():  # setuptools 81 warns that pkg_resources is going away
            warnings.simplefilter("ignore")
            import pkg_resources  # noqa: F401
        return
    except ImportError:
        pass
    from chainer_sagemaker_runtime import _pkg_resources_stub

    _stand_ins["pkg_resources"] = _pkg_resources_stub
