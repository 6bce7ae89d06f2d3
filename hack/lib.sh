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

# Installs the system packages, builds (or reuses) the test peers and the image
# backends' real downloaders (an entry of their own) and exports VMM_PEERS_DIR and
# VMM_DOWNLOADERS_DIR for the harness.
prepare_peers() {
  hack/install-deps.sh
  VMM_PEERS_DIR="$(hack/build-peers.sh | tail -n 1)"
  VMM_DOWNLOADERS_DIR="$(hack/build-peers.sh --downloaders | tail -n 1)"
  export VMM_PEERS_DIR VMM_DOWNLOADERS_DIR
  echo "test peers: $VMM_PEERS_DIR; downloaders: $VMM_DOWNLOADERS_DIR" >&2
}

# The OpenStack test world (docs/peers.md): Keystone, Glance, uWSGI and the official
# client in a venv with seeded databases, cached by content hash. Exports
# VMM_OPENSTACK_DIR for the harness. After prepare_peers (its Debian packages).
prepare_openstack() {
  VMM_OPENSTACK_DIR="$(hack/build-openstack.sh | tail -n 1)"
  export VMM_OPENSTACK_DIR
  echo "OpenStack world: $VMM_OPENSTACK_DIR" >&2
}

# The UI's test world (docs/ci.md): the built shell (VMM_UI_DIST) and steve
# (VMM_STEVE_DIR), each cached by content hash, and ui-extension/node_modules from
# the lockfile (jest and the browser suite's playwright-core need it even when the
# built shell comes from the cache, as on a fresh clone).
prepare_ui() {
  VMM_STEVE_DIR="$(hack/build-peers.sh --steve | tail -n 1)"
  VMM_UI_DIST="$(hack/build-ui.sh | tail -n 1)"
  hack/build-ui.sh --deps
  export VMM_STEVE_DIR VMM_UI_DIST
  echo "steve: $VMM_STEVE_DIR; UI: $VMM_UI_DIST" >&2
}

# The fuzz targets (fuzz/, docs/ci.md), built with nightly Rust and libFuzzer: installs
# cargo-fuzz (pinned) into the cache when missing, checks fuzz/Cargo.lock is current and
# builds every target into their own target directory (instrumented builds share nothing
# with the workspace's). Exports VMM_FUZZ_TARGET_DIR.
CARGO_FUZZ_VERSION=0.13.2
prepare_fuzz() {
  local root="$VMM_CACHE_DIR/cargo-fuzz"
  if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: fuzzing needs nightly Rust: rustup toolchain install nightly" >&2
    return 1
  fi
  if [[ "$("$root/bin/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    cargo install --locked --root "$root" --version "$CARGO_FUZZ_VERSION" cargo-fuzz
  fi
  export VMM_FUZZ_TARGET_DIR="$VMM_CACHE_DIR/fuzz-target"
  cargo +nightly fetch --locked --manifest-path fuzz/Cargo.toml
  CARGO_TARGET_DIR="$VMM_FUZZ_TARGET_DIR" PATH="$root/bin:$PATH" \
    cargo +nightly fuzz build --fuzz-dir fuzz --debug-assertions
}

# Runs the commands in the background, their output kept for `join_background` (which
# prints it, fails if they failed and takes the VMM_* variables they exported), so a cold
# run's Go, Python and npm builds overlap the Rust compiles: each alone leaves a core idle
# in its serial phases and downloads (docs/ci.md). A warm run's are cache hits.
start_background() { # start_background NAME COMMAND...
  local name=$1
  shift
  BACKGROUND_DIR=${BACKGROUND_DIR:-$(mktemp -d)}
  declare -gA BACKGROUND_PIDS
  # Its own process group (job control on for the spawn), so that a failing
  # foreground step stops it with everything it started.
  set -m
  (
    "$@"
    export -p | sed -n 's/^declare -x \(VMM_\)/export \1/p' >"$BACKGROUND_DIR/$name.env"
  ) >"$BACKGROUND_DIR/$name.log" 2>&1 &
  BACKGROUND_PIDS[$name]=$!
  set +m
  trap stop_backgrounds EXIT
}

stop_backgrounds() {
  local pid
  for pid in "${BACKGROUND_PIDS[@]}"; do
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
}

join_background() { # join_background NAME
  local name=$1 status=0
  wait "${BACKGROUND_PIDS[$name]}" || status=$?
  unset "BACKGROUND_PIDS[$name]"
  sed "s/^/[$name] /" "$BACKGROUND_DIR/$name.log" >&2
  if ((status != 0)); then
    echo "error: $name failed (exit $status); its output is above" >&2
    return "$status"
  fi
  source "$BACKGROUND_DIR/$name.env"
  rm -f "$BACKGROUND_DIR/$name".*
}
