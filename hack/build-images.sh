#!/usr/bin/env bash
# Builds the container images without a Docker daemon, as OCI image
# layouts (https://github.com/opencontainers/image-spec/blob/main/image-layout.md)
# written by umoci, built from its pinned Go module:
#   vm-migration-apiserver   the static vmm-apiserver and CA certificates, nothing else
#   vm-migration-controller  the static vmm-controller, CA certificates, and qemu-img with the
#                            shared libraries it loads (the fallback converter)
#   vm-migration-ui          Debian's static busybox, whose httpd serves the UI extension's
#                            package (hack/build-ui.sh) as Rancher loads it (charts/vm-migration-ui)
# All run as 65532:65532. File times, the image's creation time and history are those of
# the last commit (SOURCE_DATE_EPOCH), so the same commit and toolchain give the same layers.
#
# Usage: hack/build-images.sh [OUT_DIR]     (default: target/images)
# Then e.g. `skopeo copy oci:target/images/oci:vm-migration-apiserver docker://registry/…:tag`.
set -euo pipefail
cd "$(dirname "$0")/.."
source hack/lib.sh
hack/install-deps.sh

UMOCI_VERSION=v0.6.0
TARGET=x86_64-unknown-linux-gnu
OUT=${1:-target/images}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
export SOURCE_DATE_EPOCH
CREATED=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
VERSION=$(sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/vm-migration/Chart.yaml)

log() { printf '[build-images] %s\n' "$*" >&2; }

# umoci, cached by version. Its go.mod has a replace directive, which `go install
# pkg@version` refuses, so it is built inside its downloaded module.
UMOCI=$VMM_CACHE_DIR/tools/umoci-$UMOCI_VERSION
if [[ ! -x $UMOCI ]]; then
  log "building umoci $UMOCI_VERSION"
  module=$(GOFLAGS=-mod=mod go mod download -json "github.com/opencontainers/umoci@$UMOCI_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$VMM_CACHE_DIR/tools"
  (cd "$module" && GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -o "$UMOCI.part" ./cmd/umoci)
  mv "$UMOCI.part" "$UMOCI"
fi

log "building static binaries (release, crt-static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --target "$TARGET" \
  -p vmm-apiserver -p vmm-controller --bin vmm-apiserver --bin vmm-controller
BIN=$CARGO_TARGET_DIR/$TARGET/release

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

# Copies a host file into a root, at the same path.
put() { install -D -m "${3:-0644}" "$1" "$2$1"; }

# rootfs for one image: $1 = name, $2 = binary.
rootfs() {
  local root=$WORK/$1
  mkdir -p "$root"
  install -D -m 0755 "$BIN/$2" "$root/usr/local/bin/$2"
  put /etc/ssl/certs/ca-certificates.crt "$root"
  printf 'nonroot:x:65532:65532::/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'nonroot:x:65532:\n' >"$root/etc/group"
  printf '%s\n' "$root"
}

# The UI extension's server: files.txt (the index Rancher's plugin cache reads) and the
# package under plugin/, served by busybox's httpd, statically linked (no libc in the image).
log "building the UI extension package"
UI_PACKAGE=$(dirname "$(hack/build-ui.sh | tail -n 1)")/pkg
BUSYBOX=$(command -v busybox)
ldd "$BUSYBOX" >/dev/null 2>&1 && { log "$BUSYBOX is not static: install busybox-static"; exit 1; }
UI_ROOT=$WORK/ui
install -D -m 0755 "$BUSYBOX" "$UI_ROOT/bin/busybox"
mkdir -p "$UI_ROOT/srv/plugin"
cp -R "$UI_PACKAGE"/vm-migration-*/. "$UI_ROOT/srv/plugin/"
(cd "$UI_ROOT/srv" && find plugin -type f | LC_ALL=C sort >files.txt)
printf 'nonroot:x:65532:65532::/nonexistent:/sbin/nologin\n' >"$UI_ROOT/etc/passwd"
printf 'nonroot:x:65532:\n' >"$UI_ROOT/etc/group"

APISERVER_ROOT=$(rootfs apiserver vmm-apiserver)
CONTROLLER_ROOT=$(rootfs controller vmm-controller)
# qemu-img and exactly the libraries it loads, with the dynamic loader.
put "$(command -v qemu-img)" "$CONTROLLER_ROOT" 0755
for lib in $(ldd "$(command -v qemu-img)" | grep -o '/[^ ]*'); do
  put "$(readlink -f "$lib")" "$CONTROLLER_ROOT" 0755
  [[ $(readlink -f "$lib") == "$lib" ]] || { mkdir -p "$CONTROLLER_ROOT$(dirname "$lib")"; ln -sf "$(readlink -f "$lib")" "$CONTROLLER_ROOT$lib"; }
done
find "$WORK" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

rm -rf "$OUT/oci"
mkdir -p "$OUT"
"$UMOCI" init --layout "$OUT/oci"
image() { # $1 = image name, $2 = rootfs, the rest = entrypoint (program and arguments)
  local ref=$OUT/oci:vm-migration-$1 root=$2 arg
  local -a entrypoint=()
  shift 2
  for arg in "$@"; do entrypoint+=(--config.entrypoint "$arg"); done
  "$UMOCI" new --image "$ref"
  "$UMOCI" insert --rootless --image "$ref" --history.created "$CREATED" \
    --history.created_by "hack/build-images.sh" "$root" /
  "$UMOCI" config --image "$ref" --created "$CREATED" --history.created "$CREATED" \
    --config.user 65532:65532 "${entrypoint[@]}" \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin \
    --config.label "org.opencontainers.image.version=$VERSION" \
    --config.label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
    --config.label "org.opencontainers.image.source=https://github.com/harvester/vm-migration"
  "$UMOCI" gc --layout "$OUT/oci"
}
image apiserver "$APISERVER_ROOT" /usr/local/bin/vmm-apiserver
image controller "$CONTROLLER_ROOT" /usr/local/bin/vmm-controller
image ui "$UI_ROOT" /bin/busybox httpd -f -p 8080 -h /srv

# Each image, unpacked as a runtime would, runs its programs as its own user with nothing from the
# host: the static binaries answer --help, qemu-img finds every library it loads.
# $1 = image name; each further argument is one command line to run in its root.
check() {
  local name=$1 bundle=$WORK/check-$1 user line
  local -a cmd
  shift
  "$UMOCI" unpack --rootless --image "$OUT/oci:vm-migration-$name" "$bundle" >/dev/null
  user=$(python3 -c 'import json, sys; u = json.load(sys.stdin)["process"]["user"]; print(u["uid"], u["gid"])' <"$bundle/config.json")
  [[ $user == "65532 65532" ]] || { log "vm-migration-$name runs as $user, not 65532:65532"; exit 1; }
  for line in "$@"; do
    read -ra cmd <<<"$line"
    if [[ $(id -u) == 0 ]]; then
      chroot --userspec=65532:65532 "$bundle/rootfs" "${cmd[@]}" >/dev/null
    else
      unshare --user --map-root-user chroot "$bundle/rootfs" "${cmd[@]}" >/dev/null
    fi
    log "vm-migration-$name runs: $line"
  done
}
check apiserver "/usr/local/bin/vmm-apiserver --help"
check controller "/usr/local/bin/vmm-controller --help" "/usr/bin/qemu-img --version"
check ui "/bin/busybox test -s /srv/files.txt" "/bin/busybox test -s /srv/plugin/vm-migration-$(sed -n 's/^appVersion: "\(.*\)"/\1/p' charts/vm-migration-ui/Chart.yaml).umd.min.js"
log "OCI layout: $OUT/oci ($(du -sh "$OUT/oci" | cut -f1)); manifests: $(cat "$OUT/oci/index.json")"
