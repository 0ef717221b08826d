#!/usr/bin/env bash
# Stop exactly what hack/cluster/up.sh started (by pid files), clean up pods, mounts,
# iptables rules, the CNI bridge and cgroups, the volume dirs of both provisioners
# (/tmp/hostpath_pv, $BATON_CLUSTER_DIR/local-path), then remove the state dir.
# Safe to run when nothing is up.
#
#   BATON_CLUSTER_DIR  state dir (default /var/tmp/baton-cluster)
#   KEEP_STATE=1       keep the state dir (logs) after stopping
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ctr_() { timeout 60 ctr --address "$CONTAINERD_SOCK" -n k8s.io "$@"; }

# pids of containerd-shim-runc-v2 processes serving our containerd (matched by socket path)
our_shims() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    [[ ${exe##*/} == containerd-shim-runc-v2* ]] || continue
    tr '\0' ' ' <"$p/cmdline" 2>/dev/null | grep -qF -- "-address $CONTAINERD_SOCK " && echo "${p#/proc/}"
  done
  return 0
}

stop_pods() {
  is_running containerd || return 0
  if [[ -x $CRI_CLEANUP ]]; then
    log "stopping and removing all pod sandboxes via CRI (runs CNI DEL)"
    timeout 120 "$CRI_CLEANUP" -endpoint "$CONTAINERD_SOCK" stop-all >&2 || log "warning: cri-cleanup failed"
  fi
  local t
  for t in $(ctr_ tasks ls -q 2>/dev/null || true); do
    log "killing leftover task $t"
    ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
    ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true
  done
}

cleanup_iptables() {
  if [[ -x $K8S_BIN/kube-proxy ]]; then
    log "kube-proxy --cleanup (removes KUBE-* iptables chains)"
    timeout 60 "$K8S_BIN/kube-proxy" --cleanup >"$STATE/logs/kube-proxy-cleanup.log" 2>&1 || true
  fi
  # CNI: bridge ipMasq leaves per-pod chains (comment 'name: "baton"') if a pod was not torn
  # down; portmap keeps its CNI-HOSTPORT-* chains for good. Remove both.
  local rule chain ours=()
  while read -r rule; do
    [[ -n $rule ]] || continue
    log "iptables -t nat -D ${rule#-A }"
    eval "iptables -t nat -D ${rule#-A }" || true
  done < <(iptables-save -t nat 2>/dev/null | grep -E '^-A (PREROUTING|OUTPUT|POSTROUTING) ' |
    grep -E 'name: \\"baton\\"|-j CNI-HOSTPORT-' || true)
  for chain in $(iptables-save -t nat 2>/dev/null | awk '/^:CNI-/ {print substr($1, 2)}'); do
    if [[ $chain == CNI-HOSTPORT-* || $chain == CNI-DN-* ]] ||
      iptables-save -t nat | grep -E "^-A $chain " | grep -q 'name: \\"baton\\"'; then
      ours+=("$chain"); iptables -t nat -F "$chain" || true
    fi
  done
  for _ in 1 2; do
    for chain in "${ours[@]}"; do
      iptables -t nat -X "$chain" 2>/dev/null && log "removed iptables chain nat/$chain" || true
    done
  done
  # kubelet's own chains (kube-proxy --cleanup leaves them): KUBE-FIREWALL,
  # KUBE-KUBELET-CANARY, KUBE-IPTABLES-HINT, in IPv4 and IPv6
  local ipt table
  for ipt in iptables ip6tables; do
    command -v "$ipt" >/dev/null || continue
    for chain in INPUT OUTPUT; do
      while "$ipt" -t filter -D "$chain" -j KUBE-FIREWALL 2>/dev/null; do :; done
    done
    for table in filter nat mangle; do
      for chain in KUBE-FIREWALL KUBE-KUBELET-CANARY KUBE-IPTABLES-HINT; do
        if "$ipt" -t "$table" -F "$chain" 2>/dev/null; then
          "$ipt" -t "$table" -X "$chain" 2>/dev/null && log "removed $ipt chain $table/$chain" || true
        fi
      done
    done
  done
  return 0
}

mounts_under() { # mount points under $1, deepest first
  awk -v p="$1/" '{ m=$5; gsub(/\\040/, " ", m); if (index(m, p) == 1) print m }' /proc/self/mountinfo | sort -r
}

unmount_all() {
  local m
  while read -r m; do
    [[ -n $m ]] || continue
    log "umount $m"
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done < <(mounts_under "$STATE")
  # pod network namespaces left by CRI (cni-<uuid>) under /run/netns
  for m in /run/netns/cni-*; do
    [[ -e $m ]] || continue
    log "removing leftover netns $m"
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    rm -f "$m"
  done
}

cleanup_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
    [[ -d $d ]] || continue
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    [[ -d $d ]] && log "warning: cgroup $d still has processes or children"
  done
  return 0
}

main() {
  local t0; t0=$(date +%s)
  if [[ ! -d $STATE ]]; then
    log "no cluster state at $STATE: nothing is up"
  else
    mkdir -p "$STATE/logs"
    # first: it creates helper pods, and would try to while pods are torn down
    stop_daemon local-path-provisioner
    stop_daemon docker-registry
    stop_daemon kubelet 30
    stop_pods
    stop_daemon kube-proxy
    stop_daemon containerd 30
    local p
    for p in $(our_shims); do log "killing leftover shim $p"; kill -KILL "$p" 2>/dev/null || true; done
    stop_daemon kube-scheduler
    stop_daemon kube-controller-manager
    stop_daemon kube-apiserver 30
    stop_daemon etcd 30
    cleanup_iptables
    unmount_all
  fi
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
    log "deleting bridge $CNI_BRIDGE"; ip link delete "$CNI_BRIDGE"
  fi
  cleanup_cgroups
  # runc/shim dirs containerd creates under /run/containerd (removed only when empty)
  rmdir /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd/fifo /run/containerd/s \
    /run/containerd 2>/dev/null || true
  if [[ -d $STATE ]]; then
    if [[ -n $(mounts_under "$STATE") ]]; then
      die "mounts remain under $STATE, not removing it: $(mounts_under "$STATE" | tr '\n' ' ')"
    fi
    find /var/log/containers -maxdepth 1 -type l -lname "$STATE/*" -delete 2>/dev/null || true
    rm -rf "$HOSTPATH_PV_DIR"
    # local-path volumes go even with KEEP_STATE=1, like the host-path ones
    [[ -d $LOCAL_PATH_DIR ]] && { log "removing $LOCAL_PATH_DIR"; rm -rf --one-file-system "$LOCAL_PATH_DIR"; }
    if [[ ${KEEP_STATE:-0} == 1 ]]; then log "kept $STATE (KEEP_STATE=1)"
    else log "removing $STATE"; rm -rf --one-file-system "$STATE"; fi
  fi
  log "cluster down ($(($(date +%s) - t0))s)"
}

main "$@"; exit $?
