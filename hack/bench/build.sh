#!/usr/bin/env bash
# Build (once, cached under $BATON_CACHE) what `make bench` needs besides the cluster's
# etcd and kube-* (hack/cluster/build.sh builds those): KWOK from its Go module, Tekton
# Pipelines' controller from its Go module (a wrapper module, as for kube-*), and a
# Python venv with the driver's packages.
set -euo pipefail
BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../cluster/build.sh
. "$BENCH_HERE/../cluster/build.sh"   # log, have, publish, go_install, build_k8s, build_etcd
# shellcheck source=versions.env
. "$BENCH_HERE/versions.env"

build_tekton() {
  local out=$CACHE/tekton-$TEKTON_VERSION/bin
  if have "$out" tekton-controller; then log "tekton $TEKTON_VERSION cached"; return; fi
  local src=$CACHE/src/tekton-$TEKTON_VERSION mod=github.com/tektoncd/pipeline
  mkdir -p "$src"
  if [[ ! -f $src/go.mod.done ]]; then
    log "creating wrapper module for $mod@$TEKTON_VERSION in $src"
    local gomod
    gomod=$(cd "$src" && go mod download -json "$mod@$TEKTON_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      printf 'module baton.local/tektonbuild\n\ngo %s\n\nrequire %s %s\n\n' \
        "$(awk '$1=="go"{print $2; exit}' "$gomod")" "$mod" "$TEKTON_VERSION"
      # its own replace directives (a dependency's are ignored), one per line
      awk '/^replace \($/{f=1; next} f && /^\)/{f=0; next} f && /=>/{print "replace", $1, $2, $3, $4}
        /^replace [^(]/{print $1, $2, $3, $4, $5}' "$gomod"
    } >"$src/go.mod"
    (cd "$src" && GOFLAGS="$GOFLAGS -mod=mod" go get "$mod@$TEKTON_VERSION")
    touch "$src/go.mod.done"
  fi
  local tmp; tmp=$(mktemp -d "$CACHE/.build.XXXXXX")
  log "go build $mod/cmd/controller $TEKTON_VERSION"
  (cd "$src" && CGO_ENABLED=0 go build -mod=mod -trimpath -ldflags '-s -w' -o "$tmp/tekton-controller" "$mod/cmd/controller")
  publish "$tmp" "$out" tekton-controller
  rm -rf "$tmp"
  # the CRDs and config the controller reads, from the same module
  local dir; dir=$(cd "$src" && go list -mod=mod -m -f '{{.Dir}}' "$mod")
  rm -rf "$CACHE/tekton-$TEKTON_VERSION/config"; cp -r "$dir/config" "$CACHE/tekton-$TEKTON_VERSION/config"
  chmod -R u+w "$CACHE/tekton-$TEKTON_VERSION/config"
}

build_venv() {
  local out=$CACHE/bench-venv
  if [[ -f $out/.done ]] && cmp -s "$out/.done" <(echo "$BENCH_PY_PACKAGES"); then log "python venv cached"; return; fi
  log "python venv with $BENCH_PY_PACKAGES"
  python3 -m venv "$out"
  # shellcheck disable=SC2086
  "$out/bin/pip" install -q $BENCH_PY_PACKAGES
  echo "$BENCH_PY_PACKAGES" >"$out/.done"
}

bench_main() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.build.lock"
  flock 9 || true
  build_k8s
  build_etcd
  go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" kwok
  build_tekton
  build_venv
}

bench_main "$@"
