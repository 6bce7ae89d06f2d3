#!/usr/bin/env bash
# Starts the whole system locally: etcd + kube-apiserver with every CRD, a
# simulated vCenter, the apiserver and controller, the stand-in for Harvester's
# image importer (so a demo import runs to the end), a demo Vsphere source with
# VMs to import in namespace "demo", and the UI (the Rancher shell with our
# extension, served through steve) at a printed URL. Prints the kubeconfig and
# the commands to try. Ctrl-C stops everything.
#
#   hack/up.sh            everything
#   hack/up.sh --no-ui    without the UI: no npm, shell build or steve (a faster start)
# Other arguments go to vmm-dev (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

ui=1
args=()
for arg in "$@"; do
  case $arg in
  --no-ui) ui=0 ;;
  *) args+=("$arg") ;;
  esac
done

prepare_peers
cargo build --locked -p vmm-apiserver -p vmm-controller -p vmm-testkit --bin vmm-apiserver --bin vmm-controller --bin vmm-dev
if ((ui)); then
  prepare_ui
  args+=(--ui-dist "$VMM_UI_DIST")
fi
exec "$CARGO_TARGET_DIR/debug/vmm-dev" "${args[@]}"
