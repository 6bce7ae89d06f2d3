#!/usr/bin/env bash
# The UI benchmark (docs/benchmarks.md): with 10,000 VMs in vcsim, how soon the
# inventory page shows rows and what one filter keystroke fetches, in Chromium
# against the whole local system (vmm-dev with steve and the built shell).
# Extra arguments go to ui-extension/e2e/bench.mjs (--vms, --rounds). Not a test.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers
# Debug builds, as hack/up.sh runs them: the pages come from steve's cache, which
# our apiserver fills once (bench/inventory.sh measures the apiserver itself).
cargo build --locked -p vmm-apiserver -p vmm-controller -p vmm-testkit --bin vmm-apiserver --bin vmm-controller --bin vmm-dev
prepare_ui
exec node ui-extension/e2e/bench.mjs --dist "$VMM_UI_DIST" --vmm-dev "$CARGO_TARGET_DIR/debug/vmm-dev" "$@"
