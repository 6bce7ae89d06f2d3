#!/usr/bin/env bash
# Builds the UI, cached by a hash of everything it is built from, outside the
# checkout: the Rancher shell with ui-extension/pkg/vm-migration built in (dist/:
# what the browser suite, hack/up.sh and the UI benchmark serve) and the
# installable extension package (pkg/vm-migration-<version>/, `npm run build-pkg`,
# which type-checks pkg/ too; hack/build-images.sh puts it in an image).
#
#   DIST=$(hack/build-ui.sh)    build (or reuse) and print the dist directory as the LAST stdout line
#                               (the package is next to it: $DIST/../pkg)
#   hack/build-ui.sh --deps     only install ui-extension/node_modules (npm ci), for the unit tests
#   hack/build-ui.sh --print-key  print the cache key
#
# node_modules: `npm ci` with the committed lockfile whenever ui-extension/node_modules was
# not installed from this lockfile with this Node (flags: docs/ci.md). The build:
# ${VMM_CACHE_DIR}/ui/<key>/dist, <key> hashing the lockfile, the root app's config,
# pkg/** (tests and the build's own caches excepted), the name table pkg/ reads from crates/api, this script and
# `node --version`; built in a temp dir under flock, renamed into place.
set -euo pipefail
shopt -s inherit_errexit
exec 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
UI=$ROOT/ui-extension
CACHE=${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-migration}/ui
log() { printf '[build-ui] %s\n' "$*" >&2; }

MODE=build
case ${1:-} in
--deps) MODE=deps ;;
--print-key) MODE=key ;;
"") ;;
*) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2 ;;
esac

command -v node >/dev/null && command -v npm >/dev/null || { log "node and npm are needed (Node 20)"; exit 1; }
NODE_VERSION=$(node --version)
[[ $NODE_VERSION == v20.* ]] || log "WARNING: @rancher/shell 3.0.8 supports Node 20, this is $NODE_VERSION"

cache_key() {
	{
		(cd "$ROOT" && {
			printf '%s\0' ui-extension/package.json ui-extension/package-lock.json ui-extension/vue.config.js \
				ui-extension/babel.config.js ui-extension/tsconfig.json crates/api/src/transliteration.json hack/build-ui.sh
			find ui-extension/pkg -path '*/__tests__' -prune -o -path '*/node_modules' -prune -o -type f -print0
		} | LC_ALL=C sort -z | xargs -0 sha256sum)
		printf '%s\n' "$NODE_VERSION"
	} | sha256sum | cut -c1-16
}

# npm ci when node_modules is not the lockfile's (a stamp records which one it is).
install_deps() {
	local want have=""
	want="$(sha256sum <"$UI/package-lock.json" | cut -c1-64) $NODE_VERSION"
	[[ -f $UI/node_modules/.vmm-installed ]] && have=$(<"$UI/node_modules/.vmm-installed")
	if [[ $have == "$want" ]]; then
		return
	fi
	log "npm ci (ui-extension/package-lock.json)"
	local t0=$SECONDS
	# --legacy-peer-deps: one webpack 5 for the shell and its vue.config (without it npm nests
	# webpack 4 under the shell); --ignore-scripts with no Cypress or Playwright browser
	# download: the tests use Debian's chromium.
	(cd "$UI" && CYPRESS_INSTALL_BINARY=0 PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 \
		npm ci --legacy-peer-deps --ignore-scripts --no-audit --no-fund --loglevel=error)
	printf '%s\n' "$want" >"$UI/node_modules/.vmm-installed"
	log "npm ci done in $((SECONDS - t0)) s"
}

case $MODE in
key) cache_key >&3; exit 0 ;;
deps) install_deps; exit 0 ;;
esac

KEY=$(cache_key)
OUT=$CACHE/$KEY
if [[ -f $OUT/dist/index.html ]]; then
	log "cache hit: $OUT/dist"
	printf '%s\n' "$OUT/dist" >&3
	exit 0
fi

install_deps
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9
if [[ -f $OUT/dist/index.html ]]; then
	log "cache hit (built by a concurrent run): $OUT/dist"
	printf '%s\n' "$OUT/dist" >&3
	exit 0
fi
rm -rf "$CACHE"/.tmp-*
TMP=$(mktemp -d "$CACHE/.tmp-$KEY-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
log "building the shell with pkg/vm-migration into $OUT"
t0=$SECONDS
# The loaders' cache (node_modules/.cache) is keyed by nothing of our config: a stale
# one once hid a tsconfig that broke the shell. The whole shell peaks at about 3.8 GB.
rm -rf "$UI/node_modules/.cache" "$UI"/pkg/*/node_modules/.cache
(cd "$UI" && NODE_OPTIONS=--max-old-space-size=4096 ./node_modules/.bin/vue-cli-service build --dest "$TMP/dist" >"$TMP/build.log" 2>&1) || {
	tail -n 60 "$TMP/build.log" >&2
	log "the UI build failed (log above)"
	exit 1
}
shell_seconds=$((SECONDS - t0))
log "building the extension package (shell built in ${shell_seconds} s)"
t1=$SECONDS
(cd "$UI" && rm -rf dist-pkg &&
	NODE_OPTIONS=--max-old-space-size=4096 npm run --silent build-pkg vm-migration >"$TMP/build.log" 2>&1 &&
	[[ -n $(compgen -G 'dist-pkg/vm-migration-*/vm-migration-*.umd.min.js') ]]) || {
	tail -n 60 "$TMP/build.log" >&2
	log "the extension package build failed (log above)"
	exit 1
}
mv "$UI/dist-pkg" "$TMP/pkg"
rm -f "$TMP"/pkg/*/report.html
printf '{"key": "%s", "node": "%s", "shellSeconds": %d, "packageSeconds": %d, "builtAt": "%s"}\n' "$KEY" "$NODE_VERSION" \
	"$shell_seconds" $((SECONDS - t1)) "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$TMP/build-info.json"
rm -f "$TMP/build.log"
chmod 755 "$TMP"
mv -T "$TMP" "$OUT"
trap - EXIT
# Keep the three newest builds (about 45 MB each).
find "$CACHE" -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %p\n' | sort -rn | tail -n +4 | cut -d' ' -f2- | xargs -r rm -rf
log "built in $((SECONDS - t0)) s: $OUT/dist"
printf '%s\n' "$OUT/dist" >&3
