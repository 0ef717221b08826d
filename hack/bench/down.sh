#!/usr/bin/env bash
# Stop what hack/bench/{up,run}.sh started (by pid file), newest first, and remove the
# bench state dir unless KEEP_STATE=1.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

for f in "$STATE"/pids/*.pid; do
  [[ -e $f ]] || continue
  name=$(basename "$f" .pid)
  case $name in etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kwok) ;;
    *) stop_daemon "$name" 10 ;; esac
done
for name in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop_daemon "$name"; done
if [[ ${KEEP_STATE:-0} != 1 ]]; then rm -rf "$STATE"; log "removed $STATE"; fi
