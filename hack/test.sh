#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the end-to-end suites
# against real etcd, kube-apiserver, kubectl and vcsim, then the UI's unit tests
# and its browser suite (Chromium against the real system with steve and the
# built shell; screenshots to docs/ui/). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# The e2e suites run the binaries themselves (vmm-dev starts both servers).
cargo build --workspace --bins --locked
cargo test --workspace --locked --no-fail-fast

prepare_ui
(cd ui-extension && npx jest --ci)
node --test ui-extension/scripts/
node ui-extension/e2e/suite.mjs --dist "$VMM_UI_DIST" --vmm-dev "$CARGO_TARGET_DIR/debug/vmm-dev" --screenshots docs/ui
