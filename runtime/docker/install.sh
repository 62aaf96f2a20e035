#!/usr/bin/env bash
# The runtime image's install steps. runtime/Dockerfile runs this script, and so does
# scripts/setup.sh on a developer machine or in CI (outside Docker), so the image recipe is
# exercised by every test run.
#
# Settings (environment variables):
#   PYTHON           interpreter whose environment receives the packages   (default: python3)
#   VARIANT          cpu | gpu                                               (default: cpu)
#   CHAINER_VERSION  Chainer release                                         (default: 7.8.1)
#   CUPY_PACKAGE     CuPy requirement for the gpu variant                    (default: cupy-cuda12x>=13)
#   NUMPY_SPEC       NumPy requirement                                       (default: numpy>=1.26)
#   MPI4PY_SPEC      mpi4py requirement                                      (default: mpi4py>=3.1)
#   RUNTIME_SRC      runtime source directory                                (default: this script's ../)
#   EDITABLE         1: install the runtime editable (development)           (default: 0)
#   SYSTEM_PACKAGES  1: apt-get the Debian packages that are missing         (default: 1)
#   SSH_ROOT         root directory under which to prepare sshd and root's SSH keys for
#                    multi-host MPI; empty skips it                          (default: empty)
#   STEPS            which steps to run, of: system python ssh              (default: all three)
#                    (deps: python's packages without the runtime itself)
set -euo pipefail

PYTHON=${PYTHON:-python3}
VARIANT=${VARIANT:-cpu}
CHAINER_VERSION=${CHAINER_VERSION:-7.8.1}
CUPY_PACKAGE=${CUPY_PACKAGE:-cupy-cuda12x>=13}
NUMPY_SPEC=${NUMPY_SPEC:-numpy>=1.26}
MPI4PY_SPEC=${MPI4PY_SPEC:-mpi4py>=3.1}
RUNTIME_SRC=${RUNTIME_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
EDITABLE=${EDITABLE:-0}
SYSTEM_PACKAGES=${SYSTEM_PACKAGES:-1}
SSH_ROOT=${SSH_ROOT:-}
STEPS=${STEPS:-system python ssh}
step() { [[ " $STEPS " == *" $1 "* ]]; }

say() { printf '[install] %s\n' "$*"; }

case "$VARIANT" in cpu|gpu) ;; *) echo "VARIANT must be cpu or gpu, got '$VARIANT'" >&2; exit 2;; esac

# 1. Debian packages: OpenMPI (mpirun, headers for mpi4py), OpenSSH (multi-host MPI), a compiler.
if step system && [ "$SYSTEM_PACKAGES" = 1 ]; then
  missing=()
  command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
  [ -e /usr/include/x86_64-linux-gnu/openmpi ] || [ -e /usr/lib/x86_64-linux-gnu/openmpi/include ] \
    || dpkg -s libopenmpi-dev >/dev/null 2>&1 || missing+=(libopenmpi-dev)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ssh >/dev/null 2>&1 || missing+=(openssh-client)
  command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# 2. Python packages. Chainer's source build still imports pkg_resources, so its build runs
#    with an old setuptools. pip before 26.2 applies PIP_CONSTRAINT to its isolated build
#    environments; pip 25.3 and later read build constraints from PIP_BUILD_CONSTRAINT, and from
#    26.2 on only from there. Both are set: each pip reads the one it knows (an unknown PIP_*
#    variable is ignored), so the image's pip 24.0 and today's pip build Chainer alike.
#    STEPS=deps installs only these packages, not the runtime (the image caches them in a layer
#    of their own, so a runtime change rebuilds only the runtime's layer).
if step python || step deps; then
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
echo 'setuptools<70' >"$constraints"
pip_install() {
  PIP_CONSTRAINT="$constraints" PIP_BUILD_CONSTRAINT="$constraints" \
    "$PYTHON" -m pip install -q --disable-pip-version-check "$@"
}

pkgs=("$NUMPY_SPEC" "chainer==$CHAINER_VERSION" "$MPI4PY_SPEC")
[ "$VARIANT" = gpu ] && pkgs+=("$CUPY_PACKAGE")
say "pip install ${pkgs[*]}"
pip_install "${pkgs[@]}"
fi
if step python; then
if [ "$EDITABLE" = 1 ]; then
  say "pip install -e $RUNTIME_SRC[s3]"
  pip_install -e "$RUNTIME_SRC[s3]"
else
  say "pip install $RUNTIME_SRC[s3]"
  pip_install "$RUNTIME_SRC[s3]"
fi
"$PYTHON" - <<'PY'
import chainer, numpy, mpi4py
import os, sysconfig
print(f"[install] chainer {chainer.__version__} on numpy {numpy.__version__}, mpi4py {mpi4py.__version__}")
scripts = sysconfig.get_path("scripts")
missing = [c for c in ("train", "serve") if not os.path.exists(os.path.join(scripts, c))]
if missing:
    raise SystemExit(f"[install] commands {missing} are missing from {scripts}")
PY
fi

# 3. SSH for multi-host MPI: host keys, a root key pair trusted by every host of the cluster,
#    and no strict host key checking between the cluster's hosts (algo-N are new every job).
if step ssh && [ -n "$SSH_ROOT" ]; then
  say "preparing sshd under $SSH_ROOT"
  mkdir -p "$SSH_ROOT/etc/ssh" "$SSH_ROOT/root/.ssh" "$SSH_ROOT/run/sshd"
  chmod 700 "$SSH_ROOT/root/.ssh"
  for type in rsa ecdsa ed25519; do
    key="$SSH_ROOT/etc/ssh/ssh_host_${type}_key"
    [ -f "$key" ] || ssh-keygen -q -t "$type" -N '' -f "$key"
  done
  [ -f "$SSH_ROOT/root/.ssh/id_rsa" ] || ssh-keygen -q -t rsa -b 4096 -N '' -f "$SSH_ROOT/root/.ssh/id_rsa"
  cp "$SSH_ROOT/root/.ssh/id_rsa.pub" "$SSH_ROOT/root/.ssh/authorized_keys"
  chmod 600 "$SSH_ROOT/root/.ssh/authorized_keys"
  cat >"$SSH_ROOT/root/.ssh/config" <<'CFG'
Host algo-*
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
CFG
  chmod 600 "$SSH_ROOT/root/.ssh/config"
  mkdir -p "$SSH_ROOT/etc/ssh/sshd_config.d"
  cat >"$SSH_ROOT/etc/ssh/sshd_config.d/chainer-sagemaker.conf" <<'CFG'
PermitRootLogin prohibit-password
PasswordAuthentication no
UsePAM no
CFG
fi
say "done"
