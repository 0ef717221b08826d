# Shared helpers for hack/cluster/{up,down}.sh. Sourced, not executed.
# shellcheck shell=bash disable=SC2034
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
# shellcheck source=versions.env
. "$HERE/versions.env"

STATE=$BATON_CLUSTER_DIR
K8S_BIN=$BATON_CACHE/k8s-$K8S_VERSION/bin
ETCD_BIN=$BATON_CACHE/etcd-$ETCD_VERSION/bin
LOCAL_PATH_BIN=$BATON_CACHE/local-path-$LOCAL_PATH_VERSION/bin
CRI_CLEANUP=$BATON_CACHE/cri-cleanup-$(sha256sum "$HERE/cri-cleanup/main.go" | cut -c1-12)/bin/cri-cleanup
KUBECTL=$K8S_BIN/kubectl
KUBECONFIG_ADMIN=$STATE/kubeconfig
PKI=$STATE/pki
CONTAINERD_SOCK=$STATE/run/containerd/containerd.sock

NODE_NAME=baton-node
NODE_IP=192.0.2.2
APISERVER_PORT=6443
SERVICE_CIDR=10.96.0.0/16
KUBERNETES_SVC_IP=10.96.0.1
DNS_SVC_IP=10.96.0.10
CLUSTER_CIDR=10.244.0.0/16
POD_SUBNET=10.244.0.0/24
POD_GATEWAY=10.244.0.1
CNI_BRIDGE=baton0
HOSTPATH_PV_DIR=/tmp/hostpath_pv   # fixed by the in-tree kubernetes.io/host-path provisioner
LOCAL_PATH_DIR=$STATE/local-path   # volumes of StorageClass local-path (rancher.io/local-path)
LOCAL_PATH_NS=local-path-storage   # its helper pods, ServiceAccount and ConfigMap
REGISTRY_ADDR=127.0.0.1:5050       # the private registry (registry.sh): loopback, plain HTTP, login
PRIVATE_STEP_IMAGE=$REGISTRY_ADDR/private/step:latest   # the step image, pushed there

# daemons in start order; down.sh stops them in reverse
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler containerd kubelet kube-proxy
  local-path-provisioner docker-registry)

log() { printf '[cluster %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

pidfile() { echo "$STATE/pids/$1.pid"; }

# pid_of NAME: prints the pid if the pid file names a live process running the expected binary
pid_of() {
  local f pid exe
  f=$(pidfile "$1"); [[ -f $f ]] || return 1
  pid=$(<"$f"); [[ $pid =~ ^[0-9]+$ ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  [[ ${exe##*/} == "$1" || ${exe##*/} == "$1 (deleted)" ]] || return 1
  echo "$pid"
}

is_running() { pid_of "$1" >/dev/null; }

# stop_daemon NAME [GRACE_SECONDS]: SIGTERM, wait, SIGKILL; removes the pid file
stop_daemon() {
  local name=$1 grace=${2:-20} pid i
  if pid=$(pid_of "$name"); then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name did not exit after ${grace}s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      for ((i = 0; i < 50; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
  fi
  rm -f "$(pidfile "$name")"
}

kc() { "$KUBECTL" --kubeconfig "$KUBECONFIG_ADMIN" "$@"; }
