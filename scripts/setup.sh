#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh machine:
#   - Debian packages (OpenMPI, OpenSSH, and the benchmark tools) when missing;
#   - .venv/ (Python 3.11): the runtime through the image's own install script
#     (runtime/docker/install.sh), the construct library, and the development tools;
#   - the AWS CDK CLI from npm into node_modules/;
#   - with COMPAT_VENVS=1, the two extra interpreters the compatibility tests run on:
#     .venv-np1 (Python 3.11, NumPy 1.26) and .venv-py312 (Python 3.12, NumPy 2).
set -euo pipefail
cd "$(dirname "$0")/.."
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION=1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
say() { printf '[setup] %s\n' "$*"; }

find_python() {  # find_python 3.11 -> path of an interpreter of that version
  local v=$1 c
  for c in "python$v" "/root/.pyenv/versions/$v"*/bin/"python$v" "/usr/bin/python$v" "/usr/local/bin/python$v"; do
    if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import venv' >/dev/null 2>&1; then command -v "$c"; return 0; fi
  done
  return 1
}

PY311=$(find_python 3.11) || { echo "setup: Python 3.11 is required (python3.11 not found)" >&2; exit 1; }

if [ ! -x .venv/bin/python ]; then
  say "creating .venv with $PY311"
  "$PY311" -m venv .venv
fi
SYSTEM_PACKAGES=1 PYTHON=.venv/bin/python EDITABLE=1 bash runtime/docker/install.sh
say "pip install -r requirements.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt

# The SageMaker Python SDK 1.x, only to compare hyperparameter encoding with (tests/infra).
if [ ! -x .venv-sdk/bin/python ] || ! .venv-sdk/bin/python -c 'import sagemaker' 2>/dev/null; then
  say "creating .venv-sdk (sagemaker 1.72.0: the SDK 1.x Chainer estimator CONTRACT.md describes)"
  "$PY311" -m venv .venv-sdk
  .venv-sdk/bin/python -m pip install -q --disable-pip-version-check 'sagemaker==1.72.0'
fi

if [ ! -x node_modules/.bin/cdk ]; then
  say "npm ci (AWS CDK CLI)"
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ "${COMPAT_VENVS:-0}" = 1 ]; then
  PY312=$(find_python 3.12) || { echo "setup: Python 3.12 is required for the compatibility tests" >&2; exit 1; }
  for spec in ".venv-np1|$PY311|numpy<2" ".venv-py312|$PY312|numpy>=2"; do
    IFS='|' read -r dir py numpy <<<"$spec"
    [ -x "$dir/bin/python" ] || { say "creating $dir with $py"; "$py" -m venv "$dir"; }
    SYSTEM_PACKAGES=0 PYTHON="$dir/bin/python" EDITABLE=1 NUMPY_SPEC="$numpy" bash runtime/docker/install.sh
    "$dir/bin/python" -m pip install -q --disable-pip-version-check pytest pytest-timeout scikit-learn
  done
fi
say "ready"
