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
  [patch]=patch           # hack/build-peers.sh patches govmomi (test/peers/vcsim/patches)
  [chromium]=chromium     # the UI's browser suite (ui-extension/e2e), driven by playwright-core
  [busybox]=busybox-static  # the UI extension's image serves its package with busybox's httpd
)

missing=()
for cmd in "${!wanted[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${wanted[$cmd]}")
done
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
