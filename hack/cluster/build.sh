#!/usr/bin/env bash
# Build (once) every binary the local single-node cluster needs into a version-keyed
# cache outside the repo, and install the Debian packages it runs on.
#
#   BATON_CACHE   cache root (default ~/.cache/baton)
#   BUILD_ONLY    optional space-separated subset: apt k8s etcd coredns helm local-path seaweedfs
#
# Each binary is built into a temp name and renamed into place, so an interrupted build
# never leaves a broken cached binary. Re-running with everything built is a no-op.
set -euo pipefail

# shellcheck source=versions.env
. "$(dirname "${BASH_SOURCE[0]}")/versions.env"
CACHE=$BATON_CACHE
export PATH=$PATH:/usr/local/go/bin
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
export GOFLAGS=${GOFLAGS:--buildvcs=false}

log() { printf '[build %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
want() { [[ -z "${BUILD_ONLY:-}" || " $BUILD_ONLY " == *" $1 "* ]]; }

APT_PACKAGES=(containerd runc containernetworking-plugins iptables conntrack socat
  ethtool ipset openssl busybox-static python3 gcc libc6-dev dnsutils util-linux
  iproute2 ca-certificates docker-registry apache2-utils)

install_apt() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then log "apt packages present"; return; fi
  log "installing apt packages: ${missing[*]}"
  if ! apt-get install -y --no-install-recommends --dry-run "${missing[@]}" >/dev/null 2>&1; then
    log "apt-get update"; apt-get update
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  # Debian enables+starts containerd.service and docker-registry.service (:5000, all
  # interfaces) on install; we run our own instances.
  local s
  for s in containerd docker-registry; do
    if command -v systemctl >/dev/null && systemctl is-active -q "$s" 2>/dev/null; then
      systemctl disable --now "$s" || true
    elif [[ -f /var/run/$s.pid ]] && command -v invoke-rc.d >/dev/null; then
      invoke-rc.d "$s" stop || true; update-rc.d "$s" disable 2>/dev/null || true
    fi
  done
}

# have DIR NAME...: true if all binaries exist and are executable
have() { local d=$1; shift; local b; for b; do [[ -x $d/$b ]] || return 1; done; }

# publish TMPDIR DESTDIR NAME...: atomic rename of freshly built binaries
publish() { local t=$1 d=$2; shift 2; local b; mkdir -p "$d"
  for b; do mv -f "$t/$b" "$d/.$b.new"; mv -f "$d/.$b.new" "$d/$b"; log "  -> $d/$b"; done; }

build_k8s() {
  local out=$CACHE/k8s-$K8S_VERSION/bin
  local bins=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl kubelet)
  if have "$out" "${bins[@]}"; then log "kubernetes $K8S_VERSION cached in $out"; return; fi
  local src=$CACHE/src/k8s-$K8S_VERSION minor=${K8S_VERSION#v1.}
  local staging=v0.${K8S_VERSION#v1.}; minor=${minor%%.*}
  mkdir -p "$src"
  if [[ ! -f $src/go.mod.done ]]; then
    log "creating wrapper module for k8s.io/kubernetes@$K8S_VERSION in $src"
    local gomod
    gomod=$(cd "$src" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module baton.local/k8sbuild"
      echo; echo "go $(awk '$1=="go"{print $2; exit}' "$gomod")"; echo
      echo "require k8s.io/kubernetes $K8S_VERSION"; echo
      # every staging module replaced with its published counterpart
      awk '$2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod" | sort -u |
        while read -r m; do echo "replace $m => $m $staging"; done
    } >"$src/go.mod"
    (cd "$src" && GOFLAGS="$GOFLAGS -mod=mod" go get "k8s.io/kubernetes@$K8S_VERSION" && go mod download)
    touch "$src/go.mod.done"
  fi
  local ld="-s -w" p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ld+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  local tmp; tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  local static=() b
  for b in kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubectl; do
    [[ -x $out/$b ]] || static+=("k8s.io/kubernetes/cmd/$b")
  done
  if ((${#static[@]})); then
    log "go build (CGO_ENABLED=0) ${static[*]##*/} -- this takes many minutes on a cold cache"
    (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags "$ld" -o "$tmp/" "${static[@]}")
    publish "$tmp" "$out" "${static[@]##*/}"
  fi
  if [[ ! -x $out/kubelet ]]; then
    log "go build (cgo) kubelet"
    (cd "$src" && go build -mod=mod -trimpath -ldflags "$ld" -o "$tmp/kubelet" k8s.io/kubernetes/cmd/kubelet)
    publish "$tmp" "$out" kubelet
  fi
  rm -rf "$tmp"
}

# cri-cleanup (hack/cluster/cri-cleanup): a tiny CRI client for down.sh, built in the k8s
# wrapper module; cached by the hash of its source.
build_cri_cleanup() {
  local here; here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
  local sum; sum=$(sha256sum "$here/cri-cleanup/main.go" | cut -c1-12)
  local out=$CACHE/cri-cleanup-$sum/bin
  if have "$out" cri-cleanup; then log "cri-cleanup $sum cached"; return; fi
  local src=$CACHE/src/k8s-$K8S_VERSION
  mkdir -p "$src/cri-cleanup"; cp "$here/cri-cleanup/main.go" "$src/cri-cleanup/main.go"
  local tmp; tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  log "go build cri-cleanup"
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags '-s -w' -o "$tmp/cri-cleanup" ./cri-cleanup)
  publish "$tmp" "$out" cri-cleanup
  rm -rf "$tmp"
}

build_etcd() {
  local out=$CACHE/etcd-$ETCD_VERSION/bin
  if have "$out" etcd; then log "etcd $ETCD_VERSION cached"; return; fi
  local src=$CACHE/src/etcd-$ETCD_VERSION
  mkdir -p "$src"
  if [[ ! -f $src/go.mod.done ]]; then
    log "creating wrapper module for go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    printf 'module baton.local/etcdbuild\n\ngo 1.24\n' >"$src/go.mod"
    (cd "$src" && GOFLAGS="$GOFLAGS -mod=mod" go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION")
    touch "$src/go.mod.done"
  fi
  local tmp; tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  log "go build etcd $ETCD_VERSION"
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags '-s -w' -o "$tmp/etcd" go.etcd.io/etcd/server/v3)
  publish "$tmp" "$out" etcd
  rm -rf "$tmp"
}

# SeaweedFS's `weed`, the S3-compatible object store the store e2e tests run on
# loopback. Its go.mod has a replace directive, so `go install pkg@v` refuses it:
# built inside its own (read-only) module directory, with its own go.mod.
build_seaweedfs() {
  local out=$CACHE/seaweedfs-$SEAWEEDFS_VERSION/bin
  if have "$out" weed; then log "seaweedfs $SEAWEEDFS_VERSION cached"; return; fi
  local mod=github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION dir
  dir=$(go mod download -json "$mod" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [[ -d $dir ]] || { log "ERROR: go mod download $mod gave no directory"; return 1; }
  local tmp; tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  log "go build weed (SeaweedFS $SEAWEEDFS_VERSION) -- several minutes on a cold cache"
  (cd "$dir" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false go build -trimpath -ldflags '-s -w' -o "$tmp/weed" ./weed)
  publish "$tmp" "$out" weed
  rm -rf "$tmp"
}

# go_install NAME PKG VERSION BINNAME
go_install() {
  local name=$1 pkg=$2 ver=$3 bin=$4 out=$CACHE/$1-$3/bin
  if have "$out" "$bin"; then log "$name $ver cached"; return; fi
  local tmp; tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  log "go install $pkg@$ver"
  GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -ldflags '-s -w' "$pkg@$ver"
  publish "$tmp" "$out" "$bin"
  rm -rf "$tmp"
}

main() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build.lock"
  flock 9 || true  # serialize concurrent builds (up.sh from several shells)
  rm -rf "$CACHE"/.build.??????   # leftovers of an interrupted build
  start=$(date +%s)
  want apt && install_apt
  want k8s && build_k8s
  want etcd && build_etcd
  want coredns && go_install coredns github.com/coredns/coredns "$COREDNS_VERSION" coredns
  want helm && go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" helm
  want local-path && go_install local-path github.com/rancher/local-path-provisioner \
    "$LOCAL_PATH_VERSION" local-path-provisioner
  want k8s && build_cri_cleanup
  want seaweedfs && build_seaweedfs
  log "done in $(( $(date +%s) - start ))s (cache: $CACHE)"
}

# sourced by hack/bench/build.sh for its helpers: only run when executed
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then main "$@"; exit $?; fi
