#!/usr/bin/env bash
# The scale-out benchmark (docs/scale-out.md): one wave of import jobs on real
# nodes with the chart installed, disks served from the controller's pod
# against transfer Jobs on one node and on two. Needs root (the nodes), like
# the node suites. Extra arguments go to scale-out-bench (try --help). Not a
# test: no thresholds.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers
cargo build --release --locked -p vmm-apiserver -p vmm-controller -p vmm-bench --bin vmm-apiserver --bin vmm-controller --bin scale-out-bench
exec "$CARGO_TARGET_DIR/release/scale-out-bench" "$@"
