# Sourced by the hack/ scripts (from the repo root).

# Heavy build output lives outside the checkout, so a fresh clone reuses it and
# `git clean` never costs a rebuild.
export VMM_CACHE_DIR="${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-migration}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VMM_CACHE_DIR/cargo-target}"
export GOTOOLCHAIN=local
# A CI run builds once: incremental state only costs disk (tens of GB with two
# checkouts) and time there.
if [[ ${CI:-} == true ]]; then
  export CARGO_INCREMENTAL=0
fi

# Installs the system packages, builds (or reuses) the test peers and exports
# VMM_PEERS_DIR for the harness.
prepare_peers() {
  hack/install-deps.sh
  VMM_PEERS_DIR="$(hack/build-peers.sh | tail -n 1)"
  export VMM_PEERS_DIR
  echo "test peers: $VMM_PEERS_DIR" >&2
}
