#!/usr/bin/env bash
# Installs the system packages the build and the tests need, when missing.
# Go, Rust and Node come with the machine (see README); everything else is here.
set -euo pipefail

# command -> Debian package providing it
declare -A wanted=(
  [qemu-img]=qemu-utils   # reference disk converter and the converter of last resort
  [setpriv]=util-linux    # ties test peers' lives to the test process (--pdeathsig)
  [curl]=curl
  [git]=git
  [flock]=util-linux
  [unshare]=util-linux    # each real image downloader runs in a mount namespace of its own
  [mount]=mount
  [nbdkit]=nbdkit         # CDI's importer probes http sources through nbdkit's curl plugin, as in its image
  [patch]=patch           # hack/build-peers.sh patches govmomi (test/peers/vcsim/patches)
  [chromium]=chromium     # the UI's browser suite (ui-extension/e2e), driven by playwright-core
  [busybox]=busybox-static  # the UI extension's image serves its package with busybox's httpd
  [python3]=python3       # the OpenStack test world (hack/build-openstack.sh): Keystone, Glance
  [gcc]=gcc               # pip compiles uWSGI (no wheel on PyPI)
  [g++]=g++               # cargo fuzz compiles libFuzzer (hack/fuzz.sh)
  [containerd]=containerd # real nodes (test/harness/src/nodes.rs): one containerd per kubelet
  [runc]=runc
  [iptables]=iptables     # kube-proxy's Services and the kubelet's chains
  [conntrack]=conntrack   # kube-proxy clears stale UDP flows with it
)

missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
# What hack/build-openstack.sh needs beyond commands: venv with ensurepip (Debian splits it off),
# Python's and libc's headers for uWSGI's build. A python3 that is not Debian's (pyenv) brings its own.
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  >/dev/null 2>&1 || missing+=(python3-dev)
[ -f /usr/include/stdio.h ] || missing+=(libc6-dev)
if ((${#missing[@]})); then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  echo "installing Debian packages: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

for tool in go cargo rustfmt cargo-clippy node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool not found: install Go ≥ 1.26, Rust (rustup, with rustfmt and clippy) and Node 20 with npm" >&2; exit 1; }
done
