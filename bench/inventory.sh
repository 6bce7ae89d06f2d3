#!/usr/bin/env bash
# The inventory benchmark (docs/benchmarks.md): vcsim with 10,000 VMs behind the
# release vmm-apiserver, compared in the same run with kube-apiserver serving a
# copy of the same objects as custom resources. Prints medians and ratios.
# Extra arguments go to inventory-bench (try --help). Not a test: no thresholds.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers
cargo build --release --locked -p vmm-apiserver -p vmm-bench --bin vmm-apiserver --bin inventory-bench
exec "$CARGO_TARGET_DIR/release/inventory-bench" "$@"
