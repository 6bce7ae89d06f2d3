#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the end-to-end suites
# against real etcd, kube-apiserver, kubectl, vcsim, Keystone and Glance, a bounded fuzzing run
# (hack/fuzz.sh), then the UI's unit tests
# and its browser suite (Chromium against the real system with steve and the
# built shell; screenshots to docs/ui/). Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
hack/prune-target.py "$CARGO_TARGET_DIR"
# The test world builds beside the Rust compiles (a cache hit when warm): the peers and the
# OpenStack venv for the Rust suites, steve and the UI for the browser suite.
prepare_worlds() {
  prepare_peers
  prepare_openstack
  prepare_ui
}
start_background worlds prepare_worlds

# Clippy lints as the compiler of our crates: one compile of the workspace instead of a
# `cargo clippy` check beside it (a check shares little with a build: 3-4 min of a warm
# run; docs/ci.md). CLIPPY_ARGS is how `cargo clippy -- -D warnings` hands its
# arguments to clippy-driver.
linted() {
  RUSTC_WORKSPACE_WRAPPER=clippy-driver CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__ "$@"
}

# The e2e suites run the binaries themselves (vmm-dev starts both servers),
# built with the controller's crash points for the restart tests; the
# controller as released (built alone, without them) is kept aside in
# debug/shipped/ for the test that proves it ignores them. Every dependency
# resolves alike in both builds (crates/core/tests/layering.rs), so the second
# compiles only the controller again, and the tests.
TEST_FEATURES=vmm-controller/test-hooks
cargo fmt --all -- --check
linted cargo build --locked -p vmm-apiserver -p vmm-controller --bins
mkdir -p "$CARGO_TARGET_DIR/debug/shipped"
cp "$CARGO_TARGET_DIR/debug/vmm-controller" "$CARGO_TARGET_DIR/debug/shipped/"
# --all-targets: the tests too, in this one build; `cargo test --no-run` then finds them built.
linted cargo build --workspace --all-targets --locked --features "$TEST_FEATURES"
join_background worlds
linted hack/run-tests.py --workspace --locked --features "$TEST_FEATURES"
# Every parser of outside input under libFuzzer, a bounded run (VMM_FUZZ_SECONDS per target).
hack/fuzz.sh

(cd ui-extension && npx jest --ci)
node --test ui-extension/scripts/
node ui-extension/e2e/suite.mjs --dist "$VMM_UI_DIST" --vmm-dev "$CARGO_TARGET_DIR/debug/vmm-dev" --screenshots docs/ui
