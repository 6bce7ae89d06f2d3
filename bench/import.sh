#!/usr/bin/env bash
# The import benchmark (docs/benchmarks.md): a dense and a half-zero disk that
# vcsim serves as streamOptimized VMDK, imported by the release vmm-controller,
# compared in the same run with vm-import-controller's method (download,
# qemu-img convert, static file server) and a plain curl of the same bytes.
# Extra arguments go to import-bench (try --help). Not a test: no thresholds.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers
cargo build --release --locked -p vmm-controller -p vmm-bench --bin vmm-controller --bin import-bench
exec "$CARGO_TARGET_DIR/release/import-bench" "$@"
