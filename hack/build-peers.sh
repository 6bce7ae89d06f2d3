#!/usr/bin/env bash
# Builds the real test peers from pinned upstream Go modules:
#   bin/kube-apiserver bin/kubectl bin/kube-controller-manager   k8s.io/kubernetes (test/peers/kube)
#   bin/kubelet bin/kube-proxy bin/kube-scheduler  the same module and build: real nodes (harness nodes.rs)
#   bin/cni/bridge, host-local, loopback, portmap  the CNI plugins the nodes' pods network through
#                                    (github.com/containernetworking/plugins, test/peers/cni)
#   bin/etcd                         go.etcd.io/etcd/server/v3  (test/peers/etcd)
#   bin/vcsim                        our program on govmomi's simulator, patched (test/peers/vcsim)
#   bin/helm                         helm.sh/helm/v3 (test/peers/helm): lint and render the chart
#   crds/kubevirt-virtualmachines.yaml, -virtualmachineinstances, -virtualmachineexports
#                                          KubeVirt's own generator (test/peers/crds/kubevirt)
#   bin/virt-api                     KubeVirt's API server, unmodified: its VM admission webhooks
#   bin/kubevirt-gen                 the same generator: `webhooks URL CA` prints virt-api's VM
#                                    webhook configurations pointed at URL (test/peers/crds/kubevirt)
#   admission/crds/kubevirt.yaml     every CRD virt-operator installs (virt-api's informers need them);
#                                    kept out of crds/ so only control planes with admission apply them
#   bin/harvester-webhook            Harvester's own VM and VirtualMachineImage mutators and validators
#                                    behind a small server (test/peers/admission/harvester)
#   admission/crds/harvester.yaml    the CRDs its informers need that crds/ lacks (`harvester-webhook crds`)
#   admission/harvester-defaults.yaml  what a default Harvester install has that the webhooks read: the
#                                    KubeVirt CR and StorageClasses of Harvester's chart, its Settings
#   crds/harvester-virtualmachineimages.yaml  controller-gen on Harvester's types (test/peers/crds/harvester)
#   crds/harvester-settings.yaml           the same run: Setting (preflight reads overcommit-config)
#   crds/harvester-addons.yaml             the same run: the Addon our charts/addon manifest is
#   crds/rancher-managedcharts.yaml        ManagedChart as Rancher registers it (wrangler, from the
#                                          rancher/pkg/apis Harvester pins; test/peers/crds/harvester)
#   crds/rancher-settings.yaml, crds/rancher-features.yaml  the same for Setting and Feature (the UI
#                                          reads ui-performance and ui-sql-cache)
#   crds/rancher-uiplugins.yaml            UIPlugin (catalog.cattle.io) as Rancher generates it: controller-gen
#                                          on the same rancher/pkg/apis (our UI extension's install path)
#   crds/longhorn.yaml                     Longhorn's Node and Setting CRDs: controller-gen on the
#                                          longhorn-manager Harvester pins (preflight's space check)
#   crds/nad.yaml                          NAD client's shipped manifest (test/peers/crds/nad)
#   crds/prometheus-servicemonitors.yaml   the Prometheus operator's ServiceMonitor: controller-gen on
#                                          its monitoring/v1 at the version KubeVirt pins (crds/kubevirt)
# and, with --steve, in an entry of its own (only the UI suites need it):
#   bin/steve                        github.com/rancher/steve (test/peers/steve): Rancher's /v1 API layer
# and, with --downloaders, in an entry of its own (test/peers/downloaders):
#   bin/cdi-importer                 CDI's importer (Harvester's `cdi` image backend), unmodified but
#                                    for libnbd, a cgo binding only its VDDK source uses, which the Go
#                                    proxy does not serve: a stand-in module whose calls all fail
#   bin/backing-image-manager        Longhorn's (the default backend's) downloader, unmodified
# Versions: test/peers/versions.env. Details: docs/peers.md.
#
# Usage:
#   PEERS=$(hack/build-peers.sh)   build (or reuse) and print the output directory as the LAST stdout line
#   STEVE=$(hack/build-peers.sh --steve)  the same for steve's entry
#   DL=$(hack/build-peers.sh --downloaders)  the same for the downloaders' entry
#   hack/build-peers.sh --update   regenerate the wrapper modules' go.mod/go.sum from versions.env and the
#                                  upstream go.mod files (replace lists included); commit the result
#                                  (with --downloaders: those modules only)
#   hack/build-peers.sh --check    only verify the committed go.mod files against versions.env/upstream
#   hack/build-peers.sh --force    rebuild even if the cache entry exists
#   hack/build-peers.sh --prune    after building, delete every other cache entry
#   hack/build-peers.sh --print-key  print the cache key and exit (with --steve: steve's)
#
# Output: ${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-migration}/peers/<key>/ where <key> hashes
# test/peers/** (but test/peers/steve, test/peers/downloaders, and test/peers/openstack:
# hack/build-openstack.sh's), this script and `go version`; steve's entry is steve/<key>, whose key
# hashes test/peers/steve, this script and `go version`, and the downloaders' downloaders/<key> the
# same way, so no entry rebuilds for another's changes. Builds go to a temp dir that is renamed into place, under flock, so an interrupted build
# leaves no partial entry and concurrent runs build once.
# Go's own GOMODCACHE/GOCACHE are used as they are (defaults persist between runs).
set -euo pipefail
shopt -s inherit_errexit

# Everything except the final path goes to stderr.
exec 3>&1 1>&2

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
SRC=$ROOT/test/peers
SELF=$ROOT/hack/build-peers.sh

export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0
# -buildvcs=false: the wrapper modules live in our git checkout; don't stamp its state into binaries.
export GOFLAGS="-buildvcs=false -mod=readonly"
# The rancher/pkg/apis pseudo-version Harvester pins and CDI's release are not in sum.golang.org; with
# --update their hashes come from the proxy's download (they equal the ones in Harvester's own go.sum,
# which check_cdi_sums verifies for CDI).
export GONOSUMDB=github.com/rancher/rancher,kubevirt.io/containerized-data-importer,kubevirt.io/containerized-data-importer-api

KUBE_CMDS=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kube-controller-manager
	k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler)
CNI_PLUGINS=(github.com/containernetworking/plugins/plugins/main/bridge github.com/containernetworking/plugins/plugins/main/loopback
	github.com/containernetworking/plugins/plugins/ipam/host-local github.com/containernetworking/plugins/plugins/meta/portmap)
HARVESTER_API_PKG=github.com/harvester/harvester/pkg/apis/harvesterhci.io/v1beta1
HARVESTER_CRD_FILE=harvesterhci.io_virtualmachineimages.yaml
HARVESTER_ADDON_CRD_FILE=harvesterhci.io_addons.yaml
HARVESTER_SETTING_CRD_FILE=harvesterhci.io_settings.yaml
NAD_MANIFEST=artifacts/networks-crd.yaml
NAD_CRD_NAME=network-attachment-definitions.k8s.cni.cncf.io
LONGHORN_API_PKG=github.com/longhorn/longhorn-manager/k8s/pkg/apis/longhorn/v1beta2
LONGHORN_CRD_FILES=(longhorn.io_nodes.yaml longhorn.io_settings.yaml)
PROMETHEUS_API_PKG=github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1
# Replace directives of our own, beyond the generated ones, per wrapper module.
declare -A OWN_REPLACES=(
	# Longhorn's go.mod asks for a longhorn-engine release the Go proxy refuses; the one before it is served.
	[downloaders/longhorn]="github.com/longhorn/longhorn-engine v1.9.1 => github.com/longhorn/longhorn-engine v1.9.0"
	[downloaders/cdi]="libguestfs.org/libnbd => ./libnbd"
)

log() { printf '[build-peers] %s\n' "$*" >&2; }
die() { printf '[build-peers] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,/^set -euo/p' "$SELF" | sed '$d; s/^# \{0,1\}//' >&2; }

MODE=build FORCE=0 PRUNE=0 ENTRY=peers
for arg in "$@"; do
	case $arg in
	--steve) ENTRY=steve ;;
	--downloaders) ENTRY=downloaders ;;
	--update) MODE=update ;;
	--check) MODE=check ;;
	--print-key) MODE=key ;;
	--force) FORCE=1 ;;
	--prune) PRUNE=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage; die "unknown argument: $arg" ;;
	esac
done

# shellcheck source=../test/peers/versions.env
source "$SRC/versions.env"
for v in KUBE_VERSION CNI_PLUGINS_VERSION ETCD_VERSION GOVMOMI_VERSION KUBEVIRT_VERSION HARVESTER_VERSION CONTROLLER_TOOLS_VERSION NAD_VERSION HELM_VERSION STEVE_VERSION CDI_VERSION LONGHORN_BIM_VERSION; do
	[[ -n ${!v:-} ]] || die "$v is not set in test/peers/versions.env"
done

command -v go >/dev/null || die "go not found in PATH (need Go >= 1.26)"
GO_VERSION=$(go version)

# ---------------------------------------------------------------------------------------------
# Cache key and fast path
# ---------------------------------------------------------------------------------------------
# The files each entry is built from, relative to the repository root (NUL-separated).
entry_files() {
	case $ENTRY in
	peers) find test/peers \( -path test/peers/steve -o -path test/peers/openstack -o -path test/peers/downloaders \) -prune -o -type f -print0 ;;
	steve | downloaders) find "test/peers/$ENTRY" -type f -print0 ;;
	esac
	printf '%s\0' hack/build-peers.sh
}

cache_key() {
	{
		(cd "$ROOT" && entry_files | LC_ALL=C sort -z | xargs -0 sha256sum)
		printf '%s\n' "$GO_VERSION"
	} | sha256sum | cut -c1-16
}

prune_others() { # with --prune: delete every cache entry but $KEY
	if [[ $PRUNE == 1 ]]; then
		find "$ENTRY_CACHE" -mindepth 1 -maxdepth 1 -type d ! -name "$KEY" ! -name '.*' -print -exec rm -rf {} + >&2
	fi
}

CACHE_ROOT=${VMM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vm-migration}
ENTRY_CACHE=$CACHE_ROOT/$ENTRY

if [[ $MODE == key ]]; then
	cache_key >&3
	exit 0
fi

if [[ $MODE == build && $FORCE == 0 ]]; then
	KEY=$(cache_key)
	OUT=$ENTRY_CACHE/$KEY
	if [[ -f $OUT/build-info.json ]]; then
		prune_others
		log "cache hit: $OUT"
		printf '%s\n' "$OUT" >&3
		exit 0
	fi
fi

# ---------------------------------------------------------------------------------------------
# Replace lists generated from upstream go.mod files
# ---------------------------------------------------------------------------------------------

# parse_replaces FILE: one normalized line per replace directive: "old [v] => new [v]".
parse_replaces() {
	awk '
	function emit(s) {
		sub(/\/\/.*/, "", s); gsub(/[ \t]+/, " ", s); sub(/^ /, "", s); sub(/ $/, "", s)
		if (s ~ / => /) print s
	}
	/^replace[ \t]*\([ \t]*(\/\/.*)?$/ { inblk = 1; next }
	inblk && /^[ \t]*\)/ { inblk = 0; next }
	inblk { emit($0); next }
	/^replace[ \t]/ { s = $0; sub(/^replace[ \t]+/, "", s); emit(s) }
	' "$1"
}

# staging_version MODULE VERSION: the published version of MODULE's in-repo (staging) modules.
staging_version() {
	case $1 in
	k8s.io/kubernetes)
		# k8s.io/kubernetes v1.X.Y publishes its staging modules as v0.X.Y
		[[ $2 =~ ^v1\.([0-9]+\.[0-9]+.*)$ ]] || die "unexpected kubernetes version $2"
		printf 'v0.%s\n' "${BASH_REMATCH[1]}"
		;;
	*) printf '%s\n' "$2" ;; # e.g. kubevirt.io/api and kubevirt.io/client-go share kubevirt's tag
	esac
}

# A directory outside any Go module, for version queries that must not consult (or touch) ours.
NEUTRAL=$(mktemp -d "${TMPDIR:-/tmp}/build-peers-query.XXXXXX")
CLEANUP=("$NEUTRAL")
trap 'rm -rf "${CLEANUP[@]}"' EXIT

# upstream_gomod MODULE VERSION: path of the published go.mod (from the module proxy / cache).
upstream_gomod() {
	local f
	f=$(go -C "$NEUTRAL" list -m -f '{{.GoMod}}' "$1@$2") || die "cannot fetch go.mod of $1@$2"
	[[ -f $f ]] || die "no go.mod file for $1@$2 ($f)"
	printf '%s\n' "$f"
}

module_dir() { # module_dir NAME MODULE: download MODULE (verified against go.sum) and print its dir
	go -C "$SRC/$1" mod download "$2"
	go -C "$SRC/$1" list -m -f '{{.Dir}}' "$2"
}

# expected_replaces MODULE VERSION: the replace directives a main module needs in order to build
# MODULE@VERSION as a dependency: upstream's versioned replaces verbatim, and each "=> ./staging/..."
# (in-repo module) mapped to that module's published version. Other local-path replaces (e.g. etcd's
# "=> ./FORBIDDEN_DEPENDENCY" guards) only make sense inside upstream's tree and are skipped.
expected_replaces() {
	local gomod line lhs rhs sv target
	gomod=$(upstream_gomod "$1" "$2")
	sv=$(staging_version "$1" "$2")
	parse_replaces "$gomod" | while IFS= read -r line; do
		lhs=${line%% => *}
		rhs=${line#* => }
		case $rhs in
		./staging/*)
			[[ $lhs != *" "* ]] || die "unexpected versioned staging replace in $1: $line"
			printf '%s => %s %s\n' "$lhs" "$lhs" "$sv"
			;;
		./* | ../* | /*) ;;
		*)
			# A target whose path has no domain cannot be fetched (CDI's go.mod has
			# "k8s.io/dynamic-resource-allocation => dynamic-resource-allocation v0.31.5").
			target=${rhs%% *}
			if [[ ${target%%/*} == *.* ]]; then
				printf '%s\n' "$line"
			fi
			;;
		esac
	done | LC_ALL=C sort -u
}

# check_module NAME MODULE VERSION GENERATE: the committed go.mod requires MODULE@VERSION and its replace
# directives are exactly the generated list (if GENERATE=1) plus OWN_REPLACES[NAME].
check_module() {
	local dir=$SRC/$1 mod=$2 ver=$3 gen=$4 have
	[[ -f $dir/go.mod && -f $dir/go.sum ]] || die "$dir/go.mod or go.sum missing: run hack/build-peers.sh --update"
	have=$(go -C "$dir" list -m -f '{{.Version}}' "$mod") || die "$1: cannot resolve $mod"
	[[ $have == "$ver" ]] || die "$1/go.mod has $mod $have, versions.env says $ver: run hack/build-peers.sh --update"
	if ! diff -u <(expected_module_replaces "$@") <(parse_replaces "$dir/go.mod" | LC_ALL=C sort -u) \
		--label "expected (from $mod@$ver go.mod and ours)" --label "test/peers/$1/go.mod" >&2; then
		die "$1/go.mod replace list differs from the one generated from $mod@$ver: run hack/build-peers.sh --update"
	fi
}

# expected_module_replaces NAME MODULE VERSION GENERATE: what check_module expects, sorted.
expected_module_replaces() {
	{
		if [[ $4 == 1 ]]; then
			expected_replaces "$2" "$3"
		fi
		if [[ -n ${OWN_REPLACES[$1]:-} ]]; then
			printf '%s\n' "${OWN_REPLACES[$1]}"
		fi
	} | LC_ALL=C sort -u
}

check_etcd_siblings() {
	local bad
	bad=$(go -C "$SRC/etcd" list -m -f '{{.Path}} {{.Version}}' all |
		awk -v v="$ETCD_VERSION" '$1 ~ /^go\.etcd\.io\/etcd\// && $2 != v')
	[[ -z $bad ]] || die "etcd sibling modules not at $ETCD_VERSION: $bad"
}

check_all() {
	check_module kube k8s.io/kubernetes "$KUBE_VERSION" 1
	check_module cni github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" 0
	check_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" 0
	check_etcd_siblings
	check_module vcsim github.com/vmware/govmomi "$GOVMOMI_VERSION" 0
	check_module helm helm.sh/helm/v3 "$HELM_VERSION" 0
	check_module crds/kubevirt kubevirt.io/kubevirt "$KUBEVIRT_VERSION" 1
	check_module crds/harvester github.com/harvester/harvester "$HARVESTER_VERSION" 1
	check_module crds/controller-gen sigs.k8s.io/controller-tools "$CONTROLLER_TOOLS_VERSION" 0
	check_module admission/harvester github.com/harvester/harvester "$HARVESTER_VERSION" 1
	check_module crds/nad github.com/k8snetworkplumbingwg/network-attachment-definition-client "$NAD_VERSION" 1
	check_module steve github.com/rancher/steve "$STEVE_VERSION" 1
	log "wrapper modules match versions.env and the generated replace lists"
}

check_downloaders() {
	check_module downloaders/longhorn github.com/longhorn/backing-image-manager "$LONGHORN_BIM_VERSION" 0
	check_module downloaders/cdi kubevirt.io/containerized-data-importer "$CDI_VERSION" 1
	check_cdi_sums
	log "downloader modules match versions.env and the generated replace lists"
}

# CDI's release is not in the checksum database: its hashes in our go.sum must be those Harvester's
# go.sum (verified with Harvester's module) lists for the same version.
check_cdi_sums() {
	local harvester_sum line found=0
	harvester_sum=$(module_dir crds/harvester github.com/harvester/harvester)/go.sum
	while IFS= read -r line; do
		grep -qxF "$line" "$harvester_sum" || die "downloaders/cdi/go.sum: '$line' is not in Harvester $HARVESTER_VERSION's go.sum"
		found=$((found + 1))
	done < <(grep -E "^kubevirt\.io/containerized-data-importer(-api)? $CDI_VERSION[ /]" "$SRC/downloaders/cdi/go.sum")
	[[ $found == 4 ]] || die "downloaders/cdi/go.sum: expected 4 lines for CDI $CDI_VERSION, found $found"
}

# update_module NAME MODULE VERSION GENERATE [TOOL...]: (create and) edit NAME/go.mod: require
# MODULE@VERSION, declare tools, drop all replaces, append the generated replace block, go mod tidy.
update_module() {
	local name=$1 mod=$2 ver=$3 gen=$4 dir=$SRC/$1 line lhs rhs
	shift 4
	log "updating test/peers/$name: $mod@$ver"
	if [[ ! -f $dir/go.mod ]]; then
		(cd "$dir" && go mod init "vm-migration.invalid/peers/$name")
	fi
	local -a edits=(-go=1.26.0 "-require=$mod@$ver")
	while IFS= read -r line; do
		lhs=${line%% => *}
		edits+=("-dropreplace=${lhs/ /@}")
	done < <(parse_replaces "$dir/go.mod")
	local t
	for t in "$@"; do edits+=("-tool=$t"); done
	go -C "$dir" mod edit "${edits[@]}"
	if [[ $gen == 1 ]]; then
		local generated
		generated=$(expected_replaces "$mod" "$ver")
		[[ -n $generated ]] || die "no replace directives generated from $mod@$ver"
		{
			printf '\n// Generated by hack/build-peers.sh --update from the go.mod of %s@%s:\n' "$mod" "$ver"
			printf '// its replace directives, with in-repo (staging) modules mapped to their published versions.\n'
			printf '// Do not edit by hand.\nreplace (\n'
			printf '%s\n' "$generated" | sed 's/^/\t/'
			printf ')\n'
		} >>"$dir/go.mod"
	fi
	if [[ -n ${OWN_REPLACES[$name]:-} ]]; then
		line=${OWN_REPLACES[$name]}
		lhs=${line%% => *}
		rhs=${line#* => }
		go -C "$dir" mod edit "-replace=${lhs/ /@}=${rhs/ /@}"
	fi
	go -C "$dir" mod tidy
}

update_all() {
	update_module kube k8s.io/kubernetes "$KUBE_VERSION" 1 "${KUBE_CMDS[@]}"
	update_module cni github.com/containernetworking/plugins "$CNI_PLUGINS_VERSION" 0 "${CNI_PLUGINS[@]}"
	update_module etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION" 0 go.etcd.io/etcd/server/v3
	update_module vcsim github.com/vmware/govmomi "$GOVMOMI_VERSION" 0
	update_module helm helm.sh/helm/v3 "$HELM_VERSION" 0 helm.sh/helm/v3/cmd/helm
	update_module crds/kubevirt kubevirt.io/kubevirt "$KUBEVIRT_VERSION" 1 kubevirt.io/kubevirt/cmd/virt-api
	update_module crds/harvester github.com/harvester/harvester "$HARVESTER_VERSION" 1
	update_module admission/harvester github.com/harvester/harvester "$HARVESTER_VERSION" 1
	update_module crds/controller-gen sigs.k8s.io/controller-tools "$CONTROLLER_TOOLS_VERSION" 0 \
		sigs.k8s.io/controller-tools/cmd/controller-gen
	update_module crds/nad github.com/k8snetworkplumbingwg/network-attachment-definition-client "$NAD_VERSION" 1
	update_module steve github.com/rancher/steve "$STEVE_VERSION" 1 github.com/rancher/steve

	# Harvester generates its CRDs with the controller-gen its build image installs; say if we differ.
	local hdir want
	hdir=$(go -C "$SRC/crds/harvester" mod download -json github.com/harvester/harvester | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
	want=$(sed -n 's#.*sigs.k8s.io/controller-tools/cmd/controller-gen@\(v[0-9.]*\).*#\1#p' "$hdir/Dockerfile.dapper" 2>/dev/null | head -1)
	if [[ -n $want && $want != "$CONTROLLER_TOOLS_VERSION" ]]; then
		log "WARNING: harvester $HARVESTER_VERSION uses controller-gen $want, versions.env pins $CONTROLLER_TOOLS_VERSION"
	fi
	check_all
	log "done; now commit test/peers/ (the next build gets a new cache key)"
}

update_downloaders() {
	update_module downloaders/longhorn github.com/longhorn/backing-image-manager "$LONGHORN_BIM_VERSION" 0 \
		github.com/longhorn/backing-image-manager
	update_module downloaders/cdi kubevirt.io/containerized-data-importer "$CDI_VERSION" 1 \
		kubevirt.io/containerized-data-importer/cmd/cdi-importer
	check_downloaders
	log "done; now commit test/peers/downloaders/"
}

case $MODE in
update) if [[ $ENTRY == downloaders ]]; then update_downloaders; else update_all; fi; exit 0 ;;
check) check_all; check_downloaders; exit 0 ;;
esac

# ---------------------------------------------------------------------------------------------
# Build (under lock, into a temp dir renamed into place)
# ---------------------------------------------------------------------------------------------
mkdir -p "$ENTRY_CACHE"
exec 9>"$ENTRY_CACHE/.lock"
if ! flock -n 9; then
	log "another build-peers.sh is building; waiting for its lock"
	flock 9
fi
KEY=$(cache_key)
OUT=$ENTRY_CACHE/$KEY
if [[ $FORCE == 0 && -f $OUT/build-info.json ]]; then
	log "cache hit (built by a concurrent run): $OUT"
	printf '%s\n' "$OUT" >&3
	exit 0
fi
# Under the lock any leftover temp dir belongs to an interrupted build.
rm -rf "$ENTRY_CACHE"/.tmp-* "$ENTRY_CACHE"/.old-*
TMP=$(mktemp -d "$ENTRY_CACHE/.tmp-$KEY-XXXXXX")
CLEANUP+=("$TMP")
mkdir -p "$TMP/bin" "$TMP/crds" "$TMP/work"
WORK=$TMP/work

log "building $ENTRY into $OUT ($GO_VERSION, CI=${CI:-false})"
if [[ $ENTRY == downloaders ]]; then check_downloaders; else check_all; fi

declare -A SECS=()
STEPS=()
timed() { # timed NAME CMD...: run CMD, record its wall time
	local name=$1 t0
	shift
	t0=$EPOCHREALTIME
	log "== $name"
	"$@"
	STEPS+=("$name")
	SECS[$name]=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
	log "== $name done in ${SECS[$name]}s"
}

build_kube() {
	local dir=$SRC/kube major minor date pkg
	IFS=. read -r major minor _ <<<"${KUBE_VERSION#v}"
	date=$(go -C "$dir" list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' "k8s.io/kubernetes@$KUBE_VERSION")
	local -a x=()
	# Same variables as kubernetes' hack/lib/version.sh stamps (commit left unset: not known reproducibly).
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		x+=("-X $pkg.gitVersion=$KUBE_VERSION" "-X $pkg.gitMajor=$major" "-X $pkg.gitMinor=$minor"
			"-X $pkg.gitTreeState=archive" "-X $pkg.buildDate=$date")
	done
	go -C "$dir" build -trimpath -ldflags "-s -w ${x[*]}" -o "$TMP/bin/" "${KUBE_CMDS[@]}"
}

build_cni() {
	mkdir -p "$TMP/bin/cni"
	go -C "$SRC/cni" build -trimpath -ldflags "-s -w" -o "$TMP/bin/cni/" "${CNI_PLUGINS[@]}"
}

build_etcd() {
	go -C "$SRC/etcd" build -trimpath -ldflags "-s -w" -o "$TMP/bin/etcd" go.etcd.io/etcd/server/v3
}

build_vcsim() {
	# On a copy of govmomi with test/peers/vcsim/patches applied, replacing it in a copy of our module
	# (whose committed go.mod stays replace-free for --check).
	local govmomi=$WORK/govmomi module=$WORK/vcsim p
	cp -R "$(module_dir vcsim github.com/vmware/govmomi)" "$govmomi"
	chmod -R u+w "$govmomi"
	for p in "$SRC"/vcsim/patches/*.patch; do
		patch -d "$govmomi" -p1 --forward --quiet <"$p" || die "$(basename "$p") does not apply to govmomi $GOVMOMI_VERSION"
	done
	cp -R "$SRC/vcsim" "$module"
	go -C "$module" mod edit -replace "github.com/vmware/govmomi=$govmomi"
	go -C "$module" build -trimpath -ldflags "-s -w" -o "$TMP/bin/vcsim" .
}

build_helm() {
	# The version helm prints and stamps into rendered charts' .Capabilities.HelmVersion.
	go -C "$SRC/helm" build -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
		-o "$TMP/bin/helm" helm.sh/helm/v3/cmd/helm
}

build_steve() {
	# steve has `package main` at its module root; `--version` prints this stamp.
	go -C "$SRC/steve" build -trimpath -ldflags "-s -w -X github.com/rancher/steve/pkg/version.Version=$STEVE_VERSION" \
		-o "$TMP/bin/steve" github.com/rancher/steve
}

build_downloaders() {
	go -C "$SRC/downloaders/cdi" build -trimpath -ldflags "-s -w" -o "$TMP/bin/cdi-importer" \
		kubevirt.io/containerized-data-importer/cmd/cdi-importer
	go -C "$SRC/downloaders/longhorn" build -trimpath -ldflags "-s -w" -o "$TMP/bin/backing-image-manager" \
		github.com/longhorn/backing-image-manager
}

crd_kubevirt() {
	go -C "$SRC/crds/kubevirt" build -trimpath -ldflags "-s -w" -o "$TMP/bin/kubevirt-gen" .
	for crd in virtualmachines virtualmachineinstances virtualmachineexports; do
		"$TMP/bin/kubevirt-gen" crd "$crd" >"$TMP/crds/kubevirt-$crd.yaml"
	done
	mkdir -p "$TMP/admission/crds"
	"$TMP/bin/kubevirt-gen" crds >"$TMP/admission/crds/kubevirt.yaml"
}

build_virt_api() {
	go -C "$SRC/crds/kubevirt" build -trimpath -ldflags "-s -w" -o "$TMP/bin/virt-api" kubevirt.io/kubevirt/cmd/virt-api
}

build_harvester_webhook() {
	local dir=$SRC/admission/harvester
	# Its tests compare what it restates of Harvester's webhook server with the pinned source.
	# -trimpath as in the build: without it every package of Harvester's graph compiles twice.
	go -C "$dir" test -trimpath -count=1 .
	go -C "$dir" build -trimpath -ldflags "-s -w" -o "$TMP/bin/harvester-webhook" .
	"$TMP/bin/harvester-webhook" crds >"$TMP/admission/crds/harvester.yaml"
	"$TMP/bin/harvester-webhook" defaults --harvester-dir "$(module_dir admission/harvester github.com/harvester/harvester)" \
		>"$TMP/admission/harvester-defaults.yaml"
}

crd_harvester() {
	go -C "$SRC/crds/controller-gen" build -trimpath -ldflags "-s -w" -o "$WORK/controller-gen" \
		sigs.k8s.io/controller-tools/cmd/controller-gen
	# controller-gen loads the package through `go list` in the harvester wrapper module, so it sees
	# Harvester's dependency versions (its replace list) exactly as pinned there.
	(cd "$SRC/crds/harvester" && "$WORK/controller-gen" crd paths="$HARVESTER_API_PKG" output:crd:dir="$WORK/harvester")
	cp "$WORK/harvester/$HARVESTER_CRD_FILE" "$TMP/crds/harvester-virtualmachineimages.yaml"
	cp "$WORK/harvester/$HARVESTER_ADDON_CRD_FILE" "$TMP/crds/harvester-addons.yaml"
	cp "$WORK/harvester/$HARVESTER_SETTING_CRD_FILE" "$TMP/crds/harvester-settings.yaml"
	go -C "$SRC/crds/harvester" build -trimpath -o "$WORK/rancher-crd" ./rancher
	"$WORK/rancher-crd" ManagedChart >"$TMP/crds/rancher-managedcharts.yaml"
	"$WORK/rancher-crd" Setting >"$TMP/crds/rancher-settings.yaml"
	"$WORK/rancher-crd" Feature >"$TMP/crds/rancher-features.yaml"
	crd_uiplugin
	# Cross-check with the manifest Harvester ships (its scripts/generate-manifest blanks the version).
	local hdir shipped
	hdir=$(module_dir crds/harvester github.com/harvester/harvester)
	shipped=$hdir/deploy/charts/harvester-crd/templates/$HARVESTER_CRD_FILE
	if [[ -f $shipped ]] && diff -q <(sed 's/controller-gen\.kubebuilder\.io\/version:.*/{}/' "$WORK/harvester/$HARVESTER_CRD_FILE") "$shipped" >/dev/null; then
		log "harvester CRD is identical to the one shipped in harvester $HARVESTER_VERSION"
	else
		log "WARNING: generated $HARVESTER_CRD_FILE differs from harvester $HARVESTER_VERSION's shipped chart ($shipped)"
	fi
}

crd_uiplugin() { # after crd_harvester has built controller-gen
	# Rancher generates this CRD with controller-gen from catalog.cattle.io/v1. That package also
	# holds the App types, whose management.cattle.io/v3 fields controller-gen cannot read, so run it
	# on the package's doc.go (group name) and plugin.go (UIPlugin, self-contained) alone, copied into
	# a copy of the wrapper module that pins rancher/pkg/apis.
	local api pkg=$WORK/rancher-catalog
	api=$(module_dir crds/harvester github.com/rancher/rancher/pkg/apis)/catalog.cattle.io/v1
	mkdir -p "$pkg/v1"
	cp "$SRC/crds/harvester/go.mod" "$SRC/crds/harvester/go.sum" "$pkg/"
	cp "$api/doc.go" "$api/plugin.go" "$pkg/v1/"
	chmod -R u+w "$pkg"
	(cd "$pkg" && "$WORK/controller-gen" crd paths=./v1 output:crd:dir="$WORK/catalog")
	cp "$WORK/catalog/catalog.cattle.io_uiplugins.yaml" "$TMP/crds/rancher-uiplugins.yaml"
}

crd_prometheus() { # after crd_harvester (its controller-gen)
	# The chart's ServiceMonitors are checked against the operator's own schema. The operator makes its
	# CRDs with controller-gen from this package; KubeVirt's wrapper module already pins (and go.sum
	# verifies) the version KubeVirt ships its ServiceMonitor for.
	(cd "$SRC/crds/kubevirt" && "$WORK/controller-gen" crd paths="$PROMETHEUS_API_PKG" output:crd:dir="$WORK/monitoring")
	cp "$WORK/monitoring/monitoring.coreos.com_servicemonitors.yaml" "$TMP/crds/prometheus-servicemonitors.yaml"
	PROMETHEUS_VERSION=$(go -C "$SRC/crds/kubevirt" list -m -f '{{.Version}}' "${PROMETHEUS_API_PKG%/v1}")
}

crd_nad() {
	local ndir
	ndir=$(module_dir crds/nad github.com/k8snetworkplumbingwg/network-attachment-definition-client)
	go -C "$SRC/crds/nad" build -trimpath -ldflags "-s -w" -o "$WORK/crd-extract" .
	"$WORK/crd-extract" -in "$ndir/$NAD_MANIFEST" -name "$NAD_CRD_NAME" >"$TMP/crds/nad.yaml"
}

crd_longhorn() { # after crd_harvester (its controller-gen and module)
	# Longhorn ships its CRDs only as a Helm template (k8s/crds.yaml), made by the same controller-gen
	# version from this package; running it here gives plain manifests.
	(cd "$SRC/crds/harvester" && "$WORK/controller-gen" crd paths="$LONGHORN_API_PKG" output:crd:dir="$WORK/longhorn")
	local f
	for f in "${LONGHORN_CRD_FILES[@]}"; do
		cat "$WORK/longhorn/$f"
	done >"$TMP/crds/longhorn.yaml"
}

T0=$EPOCHREALTIME
case $ENTRY in
peers)
	timed kube build_kube
	timed cni build_cni
	timed etcd build_etcd
	timed vcsim build_vcsim
	timed helm build_helm
	timed crd-kubevirt crd_kubevirt
	timed virt-api build_virt_api
	timed harvester-webhook build_harvester_webhook
	timed crd-harvester crd_harvester
	timed crd-nad crd_nad
	timed crd-longhorn crd_longhorn
	timed crd-prometheus crd_prometheus
	BINS=(kube-apiserver kubectl kube-controller-manager kubelet kube-proxy kube-scheduler cni/bridge cni/host-local
		cni/loopback cni/portmap etcd vcsim helm virt-api kubevirt-gen harvester-webhook)
	ADMISSION=(crds/kubevirt crds/harvester harvester-defaults)
	CRDS=(kubevirt-virtualmachines kubevirt-virtualmachineinstances kubevirt-virtualmachineexports harvester-virtualmachineimages harvester-addons harvester-settings rancher-managedcharts rancher-settings rancher-features rancher-uiplugins longhorn nad prometheus-servicemonitors)
	VERSIONS='"kubernetes": "'$KUBE_VERSION'", "cniPlugins": "'$CNI_PLUGINS_VERSION'", "etcd": "'$ETCD_VERSION'", "govmomi": "'$GOVMOMI_VERSION'", "kubevirt": "'$KUBEVIRT_VERSION'", "harvester": "'$HARVESTER_VERSION'", "controllerTools": "'$CONTROLLER_TOOLS_VERSION'", "nad": "'$NAD_VERSION'", "helm": "'$HELM_VERSION'", "prometheusOperator": "'$PROMETHEUS_VERSION'"'
	;;
steve)
	timed steve build_steve
	BINS=(steve)
	CRDS=()
	ADMISSION=()
	VERSIONS='"steve": "'$STEVE_VERSION'"'
	;;
downloaders)
	timed downloaders build_downloaders
	BINS=(cdi-importer backing-image-manager)
	CRDS=()
	ADMISSION=()
	VERSIONS='"cdi": "'$CDI_VERSION'", "longhornBackingImageManager": "'$LONGHORN_BIM_VERSION'"'
	;;
esac
TOTAL=$(awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')
rm -rf "$WORK"

for f in "${BINS[@]}"; do [[ -x $TMP/bin/$f ]] || die "missing bin/$f"; done
for f in "${CRDS[@]}"; do [[ -s $TMP/crds/$f.yaml ]] || die "missing crds/$f.yaml"; done
for f in "${ADMISSION[@]}"; do [[ -s $TMP/admission/$f.yaml ]] || die "missing admission/$f.yaml"; done

json_sizes() {
	local sep="" f
	while IFS= read -r f; do
		printf '%s"%s": %s' "$sep" "$f" "$(stat -c %s "$TMP/bin/$f")"
		sep=", "
	done < <(cd "$TMP/bin" && find . -type f -printf '%P\n' | LC_ALL=C sort)
}
json_secs() {
	local sep="" k
	for k in "${STEPS[@]}"; do
		printf '%s"%s": %s' "$sep" "$k" "${SECS[$k]}"
		sep=", "
	done
}
cat >"$TMP/build-info.json" <<EOF
{
  "key": "$KEY",
  "goVersion": "$GO_VERSION",
  "versions": {$VERSIONS},
  "buildSeconds": {$(json_secs), "total": $TOTAL},
  "binarySizes": {$(json_sizes)},
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "ci": "${CI:-false}"
}
EOF

if [[ -e $OUT ]]; then # only with --force
	mv -T "$OUT" "$ENTRY_CACHE/.old-$KEY-$$"
	rm -rf "$ENTRY_CACHE/.old-$KEY-$$"
fi
chmod 755 "$TMP"
mv -T "$TMP" "$OUT"
CLEANUP=("$NEUTRAL")
prune_others
log "built in ${TOTAL}s: $OUT"
printf '%s\n' "$OUT" >&3
