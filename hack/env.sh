# Sourced by the hack/ scripts: where heavy build output lives, outside the
# checkout, so that a fresh clone reuses it and `git clean` never costs a rebuild.
export VMM_CACHE_DIR="${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-migration}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$VMM_CACHE_DIR/cargo-target}"
export GOTOOLCHAIN=local
