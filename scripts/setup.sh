#!/usr/bin/env bash
# Sets up everything `make test` and `make demo` need on a fresh machine:
#   - Debian packages (OpenMPI, OpenSSH, and the benchmark tools) when missing;
#   - .venv/ (Python 3.11): the runtime through the image's own install script
#     (runtime/docker/install.sh), the construct library, and the development tools;
#   - the AWS CDK CLI from npm into node_modules/;
#   - the image recipe's Python step checked with the newest pip as well (.venv runs it with
#     the image's pip, 24.0): a throwaway venv, skipped while install.sh is unchanged;
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
# The image's pip (python:3.11-slim-bookworm ships 24.0), so .venv installs as the image does.
IMAGE_PIP=24.0
if [ "$(.venv/bin/python -m pip --version | cut -d' ' -f2)" != "$IMAGE_PIP" ]; then
  say "pip $IMAGE_PIP in .venv (the image's pip)"
  .venv/bin/python -m pip install -q --disable-pip-version-check "pip==$IMAGE_PIP"
fi
SYSTEM_PACKAGES=1 PYTHON=.venv/bin/python EDITABLE=1 bash runtime/docker/install.sh
# Multi-host local runs (tests/multihost) wire each host's network namespace with iproute2's `ip`.
if ! command -v ip >/dev/null 2>&1; then
  say "apt-get install iproute2"
  apt-get update -qq && apt-get install -y -qq --no-install-recommends iproute2 >/dev/null
fi

# The same Python step with the newest pip (26.2+ builds sdists under PIP_BUILD_CONSTRAINT
# only), in a throwaway venv and without pip's wheel cache, so Chainer's source build really
# runs (about a minute). The stamp names the recipe's hash and that pip's version and lives in
# a machine-wide cache directory, so fresh clones (CI) skip the check until either changes.
cache_dir=${SETUP_CACHE_DIR:-/var/cache/chainer-sagemaker-cdk}
recipe=$(cat runtime/docker/install.sh runtime/pyproject.toml | sha256sum | cut -c1-16)
newest_pip=$("$PY311" -m pip index versions pip 2>/dev/null | sed -n 's/^pip (\(.*\))$/\1/p')
stamp="$cache_dir/pip-latest-$recipe-${newest_pip:-unknown}"
if [ ! -f "$stamp" ]; then
  say "checking runtime/docker/install.sh with the newest pip (${newest_pip:-?}) in .venv-pip-latest"
  rm -rf .venv-pip-latest
  "$PY311" -m venv .venv-pip-latest
  .venv-pip-latest/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  PIP_NO_CACHE_DIR=1 SYSTEM_PACKAGES=0 STEPS=python PYTHON=.venv-pip-latest/bin/python \
    EDITABLE=1 bash runtime/docker/install.sh
  say "install.sh works with $(.venv-pip-latest/bin/python -m pip --version | cut -d' ' -f1-2)"
  rm -rf .venv-pip-latest
  mkdir -p "$cache_dir"
  touch "$stamp"
fi
say "pip install -r requirements.txt"
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt

# The SageMaker Python SDK 1.x, only to compare hyperparameter encoding with (tests/infra).
if [ ! -x .venv-sdk/bin/python ] || ! .venv-sdk/bin/python -c 'import sagemaker' 2>/dev/null; then
  say "creating .venv-sdk (sagemaker 1.72.0: the SDK 1.x Chainer estimator of docs/contract.md §4)"
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
