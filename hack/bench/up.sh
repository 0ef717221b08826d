#!/usr/bin/env bash
# Start the bench control plane: etcd, kube-apiserver (audit log of request metadata),
# kube-controller-manager, kube-scheduler and KWOK as host processes on 127.0.0.1, state
# in $BATON_BENCH_DIR (default /var/tmp/baton-bench). No kubelet, no containerd: the
# $BENCH_NODES (default 4) nodes are KWOK's fakes; the machine's real node is not in this
# cluster. Then Baton's CRDs, Tekton's CRDs and config, and the bench namespaces.
# Idempotent; hack/bench/down.sh stops it.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

apiserver_ready() { kc get --raw /readyz --request-timeout=3s; }

make_bench_pki() {
  make_ca baton-bench-ca
  mkcert apiserver kube-apiserver "" "DNS:localhost,IP:127.0.0.1,IP:10.96.0.1" server
  mkcert etcd-server etcd "" "DNS:localhost,IP:127.0.0.1" both
  mkcert apiserver-etcd-client kube-apiserver-etcd-client "" "" client
  mkcert admin kubernetes-admin system:masters "" client
  mkcert controller-manager system:kube-controller-manager "" "" client
  mkcert scheduler system:kube-scheduler "" "" client
  # one identity per component, so the audit log counts each one's requests
  local who
  for who in kwok baton-controller baton-runner tekton-controller bench-driver; do
    mkcert "$who" "$who" system:masters "" client
  done
}

write_kubeconfigs() {
  kubeconfig admin admin
  local who
  for who in controller-manager scheduler kwok baton-controller baton-runner tekton-controller bench-driver; do
    kubeconfig "$who" "$who"
  done
}

start_control_plane() {
  start_daemon etcd "$ETCD_BIN/etcd" \
    --name bench --data-dir "$STATE/etcd" \
    --listen-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" --advertise-client-urls "https://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "bench=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
    --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS_PORT" \
    --cert-file "$PKI/etcd-server.crt" --key-file "$PKI/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$PKI/ca.crt" \
    --quota-backend-bytes 8589934592 --snapshot-count 10000 --log-level warn
  wait_for "etcd health" etcd curl -sf --max-time 2 "http://127.0.0.1:$ETCD_METRICS_PORT/health"
  start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address 127.0.0.1 --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" \
    --etcd-servers "https://127.0.0.1:$ETCD_CLIENT_PORT" --etcd-cafile "$PKI/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --authorization-mode Node,RBAC \
    --audit-policy-file "$BENCH_HERE/audit-policy.yaml" --audit-log-path "$STATE/audit/audit.log" \
    --audit-log-maxsize 4096 --audit-log-maxbackup 1 --audit-log-mode blocking \
    --max-requests-inflight 800 --max-mutating-requests-inflight 400 \
    --profiling="${BENCH_APISERVER_PPROF:-false}" --v=1
  wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready
  start_kcm
  start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/config/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/config/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/config/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" --leader-elect=false --profiling=false --v=1
}

start_kwok() {
  start_daemon kwok "$KWOK_BIN" --kubeconfig "$STATE/config/kwok.kubeconfig" \
    --config "$BENCH_HERE/kwok-stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --node-ip 10.250.0.1 --cidr 10.250.0.1/16 --node-lease-duration-seconds 40
  local i
  for ((i = 0; i < FAKE_NODES; i++)); do
    kc apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i}
YAML
  done
  wait_for "$FAKE_NODES fake nodes Ready" kwok fake_nodes_ready
  # the API server taints new nodes not-ready; the node lifecycle controller, which
  # would lift it, is off (fake nodes have no kubelet to watch over)
  for ((i = 0; i < FAKE_NODES; i++)); do
    kc taint node "kwok-node-$i" node.kubernetes.io/not-ready:NoSchedule- >/dev/null 2>&1 || true
  done
}
fake_nodes_ready() {
  [[ $(kc get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True) -ge $FAKE_NODES ]]
}

apply_objects() {
  log "applying Baton's CRDs, Tekton $TEKTON_VERSION's CRDs and config, namespaces"
  kc apply --server-side -f "$REPO/config/crd/" >/dev/null
  kc apply -f "$TEKTON_DIR/config/100-namespace/" >/dev/null
  # its CRDs without the conversion webhook (no webhook runs here; the bench only uses v1)
  local f
  for f in "$TEKTON_DIR"/config/300-crds/*.yaml; do
    "$BENCH_PY" -c 'import sys,yaml; d=yaml.safe_load(open(sys.argv[1])); d["spec"].pop("conversion",None); print(yaml.safe_dump(d))' "$f"
    echo ---
  done | kc apply --server-side -f - >/dev/null
  for f in "$TEKTON_DIR"/config/config-*.yaml; do kc apply -f "$f" >/dev/null; done
  for f in baton batch tekton; do
    kc create namespace "bench-$f" --dry-run=client -o yaml | kc apply -f - >/dev/null
  done
  wait_for "default ServiceAccounts" kube-controller-manager sa_ready
}
sa_ready() { local n; for n in baton batch tekton; do kc -n "bench-$n" get sa default || return 1; done; }

main() {
  "$BENCH_HERE/build.sh"
  mkdir -p "$STATE"/{logs,pids,config,etcd,audit}
  chmod 700 "$STATE/etcd"
  make_bench_pki
  write_kubeconfigs
  start_control_plane
  start_kwok
  apply_objects
  log "bench cluster up: export KUBECONFIG=$KUBECONFIG_ADMIN"
}

main "$@"
