# Shared settings of the bench control plane (hack/bench/{up,down,run}.sh). Sourced.
# It reuses hack/cluster's helpers (PKI, kubeconfigs, daemons by pid file) with its own
# state dir and loopback ports, so it never touches the e2e cluster (192.0.2.2:6443).
# shellcheck shell=bash disable=SC2034
BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../cluster/lib.sh
. "$BENCH_HERE/../cluster/lib.sh"
# shellcheck source=versions.env
. "$BENCH_HERE/versions.env"

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
STATE=${BATON_BENCH_DIR:-/var/tmp/baton-bench}
[[ $STATE != "$BATON_CLUSTER_DIR" ]] || { echo "the bench must not use the e2e cluster's $STATE" >&2; exit 1; }
PKI=$STATE/pki
KUBECONFIG_ADMIN=$STATE/kubeconfig
NODE_IP=127.0.0.1            # kubeconfig() points at NODE_IP:APISERVER_PORT
APISERVER_PORT=16443
ETCD_CLIENT_PORT=23790 ETCD_PEER_PORT=23800 ETCD_METRICS_PORT=23810
KCM_PORT=10357 SCHEDULER_PORT=10359
BATON_PORT=18480             # baton controller's runner API
TEKTON_PORTS=(18008 19090 18088)   # Tekton's profiling, metrics, probes
KWOK_BIN=$BATON_CACHE/kwok-$KWOK_VERSION/bin/kwok
TEKTON_DIR=$BATON_CACHE/tekton-$TEKTON_VERSION
BENCH_PY=$BATON_CACHE/bench-venv/bin/python
BATON_BIN=${BATON_BIN:-$REPO/target/release/baton}
FAKE_NODES=${BENCH_NODES:-4}

# start_kcm [FLAG...]: kube-controller-manager (batch/v1 Job controller among its
# controllers, each with its own service account: the audit log tells them apart)
start_kcm() {
  local cfg=$STATE/config/controller-manager.kubeconfig
  start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$cfg" --authentication-kubeconfig "$cfg" --authorization-kubeconfig "$cfg" \
    --bind-address 127.0.0.1 --secure-port "$KCM_PORT" --leader-elect=false \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true --controllers '*,-nodeipam,-nodelifecycle' \
    --service-cluster-ip-range 10.96.0.0/16 --profiling=false --v=1 "$@"
}
