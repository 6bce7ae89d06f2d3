#!/usr/bin/env bash
# The OpenStack import benchmark (docs/benchmarks.md): a dense and a half-zero
# volume exported through the stand-in for Cinder into the real Glance,
# imported by the release vmm-controller, compared in the same run with
# vm-import-controller's method (download, qemu-img convert, static file
# server) and a plain curl of the same Glance image. Extra arguments go to
# import-openstack-bench (try --help). Not a test: no thresholds.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers
prepare_openstack
cargo build --release --locked -p vmm-controller -p vmm-bench --bin vmm-controller --bin import-openstack-bench
exec "$CARGO_TARGET_DIR/release/import-openstack-bench" "$@"
