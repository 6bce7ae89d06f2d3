#!/usr/bin/env bash
# Runs every fuzz target (fuzz/, cargo fuzz with libFuzzer) for VMM_FUZZ_SECONDS each
# (default 20, CI's bounded run; `VMM_FUZZ_SECONDS=600 hack/fuzz.sh` for the long form),
# VMM_FUZZ_JOBS targets at a time (default: one per core). Each target starts from a copy
# of its committed corpus (fuzz/corpus/<target>), so a run never changes the checkout.
# Prints each target's executions and crashes; exits non-zero on any crash, keeping the
# crashing input at the printed path. Installs cargo-fuzz when missing; needs nightly Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh

seconds="${VMM_FUZZ_SECONDS:-20}"
jobs="${VMM_FUZZ_JOBS:-$(nproc)}"
prepare_fuzz
run="$VMM_CACHE_DIR/fuzz-run"
rm -rf "$run"
mkdir -p "$run"
bin="$VMM_FUZZ_TARGET_DIR/x86_64-unknown-linux-gnu/release"

# One target: its corpus copy, its log, and a `target executions crashes seeds corpus`
# line in $run/<target>.result.
fuzz_one() {
  local target=$1 dir="$run/$1"
  mkdir -p "$dir/artifacts"
  cp -r "fuzz/corpus/$target" "$dir/corpus"
  local seeds status=0
  seeds=$(find "$dir/corpus" -type f | wc -l)
  # -timeout: an input that takes 10 s is a hang, reported as a crash.
  "$bin/$target" "$dir/corpus" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" >"$dir/log" 2>&1 || status=$?
  local executions crashes
  executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
  crashes=$(find "$dir/artifacts" -type f | wc -l)
  if ((status != 0 && crashes == 0)); then
    crashes=1 # libFuzzer failed without writing an input (e.g. out of memory at start)
  fi
  echo "$target ${executions:-0} $crashes $seeds $(find "$dir/corpus" -type f | wc -l)" >"$dir.result"
}

targets=()
for source in fuzz/fuzz_targets/*.rs; do
  targets+=("$(basename "$source" .rs)")
done
echo "fuzzing ${#targets[@]} targets for ${seconds} s each, $jobs at a time (in $run)" >&2
running=0
for target in "${targets[@]}"; do
  if ((running >= jobs)); then
    wait -n
    running=$((running - 1))
  fi
  fuzz_one "$target" &
  running=$((running + 1))
done
wait

failed=0
printf '%-16s %12s %8s %s\n' target executions crashes 'corpus (seeds -> after)'
for target in "${targets[@]}"; do
  read -r name executions crashes seeds corpus <"$run/$target.result"
  printf '%-16s %12s %8s %s\n' "$name" "$executions" "$crashes" "$seeds -> $corpus"
  if ((crashes > 0)); then
    failed=1
    echo "  $target crashed; log: $run/$target/log; inputs:" >&2
    find "$run/$target/artifacts" -type f -printf '    %p\n' >&2
    grep -a -m 1 -A 3 -E 'panicked|ERROR: ' "$run/$target/log" | sed 's/^/    /' >&2 || true
  fi
done
exit "$failed"
