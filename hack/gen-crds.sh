#!/usr/bin/env bash
# Regenerate charts/vm-migration/crds/ from the Rust types in crates/api.
set -euo pipefail
cd "$(dirname "$0")/.."
UPDATE_CRDS=1 cargo test -q -p vmm-api --test crds -- committed_crds_match_the_types
