"""Chainer 7.8.1 imports and trains on today's stack with nothing asked of the user.

Marked `compat`: `make compat` runs these on NumPy 1.26 (Python 3.11) and Python 3.12 (NumPy 2).
"""

from __future__ import annotations

import subprocess
import sys

import numpy
import pytest

pytestmark = pytest.mark.compat

# Simulates the machines where the three gaps exist: no pkg_resources (setuptools 81+) and no
# numpy.distutils (NumPy 2 on Python 3.12+). numpy.sctypes is missing on any NumPy 2.
_HIDE_MODULES = """
import sys
class Hide:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "pkg_resources" or name.startswith("numpy.distutils"):
            raise ModuleNotFoundError(name)
        return None
sys.meta_path.insert(0, Hide)
"""

_USE_CHAINER = """
import numpy as np, chainer, chainer.functions as F, chainer.links as L
x = np.random.RandomState(0).rand(4, 3).astype(np.float32)
y = F.as_strided(x, (2, 2), (4, 4))   # the module that reads numpy.sctypes
link = L.Linear(3, 2)
loss = F.sum(link(x))
loss.backward()
print("ok", chainer.__version__, link.W.grad.shape, y.shape)
"""


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        check=False,
    )


def test_unmodified_chainer_code_runs_here() -> None:
    out = _python(_USE_CHAINER)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok 7.8.1 (2, 3) (2, 2)")


def test_chainer_imports_without_pkg_resources_and_numpy_distutils() -> None:
    out = _python(_HIDE_MODULES + _USE_CHAINER)
    assert out.returncode == 0, out.stderr
    assert "ok 7.8.1" in out.stdout


def test_the_hook_is_what_makes_numpy_2_work() -> None:
    out = _python("import chainer", CHAINER_SAGEMAKER_COMPAT="0")
    if int(numpy.__version__.split(".")[0]) >= 2:
        assert out.returncode != 0
        assert "sctypes" in out.stderr
    else:
        assert out.returncode == 0, out.stderr


def test_pkg_resources_stand_in_answers_like_pkg_resources() -> None:
    from chainer_sagemaker_runtime import _pkg_resources_stub as pr

    assert pr.get_distribution("numpy").version == numpy.__version__
    assert pr.require("numpy>=1.0")[0].project_name == "numpy"
    with pytest.raises(pr.VersionConflict):
        pr.require("numpy<1.0")
    with pytest.raises(pr.DistributionNotFound):
        pr.require("no-such-distribution-anywhere")
    assert isinstance(pr.DistributionNotFound("x"), pr.ResolutionError)


_PROBE = """
import importlib, sys
def probe():
    seen = []
    for name in ("pkg_resources", "numpy.distutils"):
        try:
            module = importlib.import_module(name)
            seen.append(f"{name}={getattr(module, '__file__', None)}")
        except ImportError as exc:
            seen.append(f"{name}:{type(exc).__name__}")
        sys.modules.pop(name, None)  # probe again from scratch next time
    return seen
"""

_BEFORE_AND_AFTER_CHAINER = """
import warnings
warnings.simplefilter("ignore")
without_chainer = probe()
import chainer
import chainer.testing  # imports pkg_resources itself, after chainer is loaded
after_chainer = probe()
print(without_chainer == after_chainer, without_chainer, after_chainer)
print(type(chainer.testing.helper.pkg_resources.DistributionNotFound).__name__)
"""


@pytest.mark.parametrize("hidden", [True, False], ids=["gaps-present", "real-modules"])
def test_user_code_sees_pkg_resources_and_numpy_distutils_as_without_the_hook(
    hidden: bool,
) -> None:
    """The stand-ins serve Chainer's own imports only: `try: import pkg_resources` in user code
    after `import chainer` fails where setuptools has none, and finds the real one otherwise."""
    code = (_HIDE_MODULES if hidden else "") + _PROBE + _BEFORE_AND_AFTER_CHAINER
    out = _python(code)
    assert out.returncode == 0, out.stderr
    same, *_ = out.stdout.split(" ", 1)
    assert same == "True", out.stdout
    if hidden:
        assert "pkg_resources:ModuleNotFoundError" in out.stdout
        assert "numpy.distutils:ModuleNotFoundError" in out.stdout
    assert out.stdout.splitlines()[1] == "type"  # chainer.testing got a working pkg_resources


def test_nothing_heavy_is_imported_at_interpreter_start() -> None:
    out = _python("import sys; print(sorted({'numpy', 'chainer'} & set(sys.modules)))")
    assert out.stdout.strip() == "[]"


def test_chainermn_packing_kernels_get_cuda_half_type() -> None:
    """CuPy 13+ raw kernels lack `half`; the hook adds cuda_fp16.h to ChainerMN's two packing
    kernels (the kernels themselves compile only on a GPU: benchmarks/gpu_check.py)."""
    code = (
        "import chainer.backends.cuda as cuda\n"
        "import chainermn.communicators._memory_utility as m\n"
        "seen = []\n"
        "cuda.raw = lambda code, name, *a, **k: seen.append((name, code))\n"
        "m._cupy_batched_pack_params(); m._cupy_batched_unpack_params()\n"
        "for name, code in seen:\n"
        "    print(name, code.startswith('#include <cuda_fp16.h>'), 'half*' in code)\n"
    )
    out = _python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "cupy_batched_pack_params", "True", "True",
        "cupy_batched_unpack_params", "True", "True",
    ]  # fmt: skip
