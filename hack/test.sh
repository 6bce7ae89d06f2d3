#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the end-to-end suites
# against real etcd, kube-apiserver, kubectl and vcsim. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e suites run the binaries themselves (vmm-dev starts both servers).
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast
