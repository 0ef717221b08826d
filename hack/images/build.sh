#!/usr/bin/env bash
# Build OCI image archives without a container engine and import them into the local
# cluster's containerd (namespace k8s.io). Re-imports only when an image's digest changed.
#
#   hack/images/build.sh [pause|step|noshell|coredns|baton ...]   (default: all; baton is skipped
#                                                         with a note if its binary is missing)
#   BATON_BIN          binary for localhost/baton/baton:dev (default target/release/baton)
#   BATON_ENTRYPOINT_BIN  the static step entrypoint in that image (make release builds it)
#   BATON_CACHE        archives go to $BATON_CACHE/images (default ~/.cache/baton)
#   BATON_CLUSTER_DIR  cluster state dir; its containerd socket is used for the import
#   CONTAINERD_ADDRESS override the containerd socket
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=../cluster/versions.env
. "$HERE/../cluster/versions.env"
OUT=$BATON_CACHE/images
SOCK=${CONTAINERD_ADDRESS:-$BATON_CLUSTER_DIR/run/containerd/containerd.sock}

log() { printf '[images %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

ensure_pkg() { # ensure_pkg PATH PACKAGE
  [[ -e $1 ]] && return
  log "installing $2"
  apt-get install -y --no-install-recommends --dry-run "$2" >/dev/null 2>&1 || apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$2"
}

# /etc basics + passwd with root, nobody, a uid 1000 user and nonroot 65532
common_etc() {
  cat <<'SPEC'
text /etc/passwd 0644
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
user:x:1000:1000:user:/home/user:/bin/sh
nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false
EOF
text /etc/group 0644
root:x:0:
user:x:1000:
nonroot:x:65532:
nogroup:x:65534:
EOF
text /etc/nsswitch.conf 0644
passwd: files
group: files
hosts: files dns
EOF
dir /tmp 1777
dir /root 0700
dir /home/user 0755
dir /home/nonroot 0755
SPEC
}

# emit_image NAME REF SPECFILE [mkoci args...]: archive + digest into $OUT
emit_image() {
  local name=$1 ref=$2 spec=$3; shift 3
  mkdir -p "$OUT"
  local dig
  dig=$(python3 "$HERE/mkoci.py" --spec "$spec" --ref "$ref" --out "$OUT/$name.tar" "$@")
  echo "$ref $dig" >"$OUT/$name.digest"
  log "built $ref $dig ($(du -h "$OUT/$name.tar" | cut -f1))"
}

build_pause() {
  ensure_pkg /usr/bin/gcc gcc; ensure_pkg /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
  local w; w=$(mktemp -d)
  gcc -static -O2 -s -o "$w/pause" "$HERE/pause.c"
  printf 'file %s /pause 0755\n' "$w/pause" >"$w/spec"
  emit_image pause "$PAUSE_IMAGE" "$w/spec" --entrypoint '["/pause"]' --user 65535
  rm -rf "$w"
}

build_step() {
  ensure_pkg /bin/busybox busybox-static
  local w a; w=$(mktemp -d)
  { common_etc
    echo "file /bin/busybox /bin/busybox 0755"
    for a in $(/bin/busybox --list); do
      [[ $a == busybox ]] || echo "symlink busybox /bin/$a"
    done
  } >"$w/spec"
  emit_image step "$STEP_IMAGE" "$w/spec" --cmd '["/bin/sh"]'
  rm -rf "$w"
}

# The e2e "no shell" step image: one static program, nothing else (report.c).
build_noshell() {
  ensure_pkg /usr/bin/gcc gcc; ensure_pkg /usr/lib/x86_64-linux-gnu/libc.a libc6-dev
  local w; w=$(mktemp -d)
  gcc -static -O2 -s -o "$w/report" "$HERE/report.c"
  printf 'file %s /report 0755\n' "$w/report" >"$w/spec"
  emit_image noshell "$NOSHELL_IMAGE" "$w/spec" --entrypoint '["/report"]' --cmd '["from-entrypoint"]' --user 65532
  rm -rf "$w"
}

build_coredns() {
  local bin=$BATON_CACHE/coredns-$COREDNS_VERSION/bin/coredns
  [[ -x $bin ]] || BUILD_ONLY=coredns "$HERE/../cluster/build.sh"
  local w; w=$(mktemp -d)
  { common_etc
    echo "file $bin /coredns 0755"
    echo "file /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt 0644"
  } >"$w/spec"
  emit_image coredns "$COREDNS_IMAGE" "$w/spec" --entrypoint '["/coredns"]'
  rm -rf "$w"
}

build_baton() {
  local bin=${BATON_BIN:-$REPO/target/release/baton}
  local entry=${BATON_ENTRYPOINT_BIN:-$REPO/target/x86_64-unknown-linux-gnu/release/baton-entrypoint}
  [[ -f $bin ]] || { log "baton binary $bin not found"; return 3; }
  [[ -f $entry ]] || { log "baton-entrypoint binary $entry not found"; return 3; }
  local w; w=$(mktemp -d)
  { common_etc
    echo "file $bin /usr/local/bin/baton 0755"
    # Static: step pods' init containers copy it into images that may lack a libc.
    echo "file $entry /usr/local/bin/baton-entrypoint 0755"
    echo "file /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt 0644"
    # shared libraries + dynamic loader, at the paths ldd reports
    if ldd "$bin" >/dev/null 2>&1; then
      ldd "$bin" | awk '$2=="=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u |
        while read -r lib; do echo "file $lib $lib 0755"; done
    fi
  } >"$w/spec"
  emit_image baton "$BATON_IMAGE" "$w/spec" --entrypoint '["/usr/local/bin/baton"]' --user 65532
  rm -rf "$w"
}

import_image() {
  local name=$1 ref dig cur
  read -r ref dig <"$OUT/$name.digest"
  cur=$(ctr --address "$SOCK" -n k8s.io images ls "name==$ref" 2>/dev/null | awk 'NR>1 {print $3}')
  if [[ $cur == "$dig" ]]; then log "$ref up to date in containerd"; return; fi
  log "importing $ref ($dig) into containerd k8s.io"
  ctr --address "$SOCK" -n k8s.io images import --platform linux/amd64 "$OUT/$name.tar" >/dev/null
  cur=$(ctr --address "$SOCK" -n k8s.io images ls "name==$ref" | awk 'NR>1 {print $3}')
  [[ $cur == "$dig" ]] || die "import of $ref did not yield $dig (got '${cur}')"
}

main() {
  local names=("$@") explicit=1
  if ((${#names[@]} == 0)); then names=(pause step noshell coredns baton); explicit=0; fi
  local can_import=0
  if [[ -S $SOCK ]] && ctr --address "$SOCK" version >/dev/null 2>&1; then can_import=1
  else log "containerd not reachable at $SOCK: building archives only (up.sh imports them)"; fi
  local n rc
  for n in "${names[@]}"; do
    case $n in pause|step|noshell|coredns|baton) ;; *) die "unknown image '$n' (pause|step|noshell|coredns|baton)";; esac
    rc=0; "build_$n" || rc=$?
    if ((rc == 3)); then
      ((explicit)) && die "set BATON_BIN or build target/release/baton first"
      log "skipping $BATON_IMAGE (no binary yet; run 'hack/images/build.sh baton' later)"; continue
    elif ((rc)); then die "building $n failed"; fi
    if ((can_import)); then import_image "$n"; fi
  done
  return 0
}

main "$@"; exit $?
