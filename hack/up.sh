#!/usr/bin/env bash
# Starts the whole system locally: etcd + kube-apiserver with every CRD, a
# simulated vCenter, the apiserver and controller, and a demo Vsphere source in
# namespace "demo". Prints the kubeconfig and the kubectl commands to try.
# Ctrl-C stops everything. Extra arguments go to vmm-dev (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
prepare_peers
cargo build --locked -p vmm-apiserver -p vmm-controller -p vmm-testkit --bin vmm-apiserver --bin vmm-controller --bin vmm-dev
exec "$CARGO_TARGET_DIR/debug/vmm-dev" "$@"
