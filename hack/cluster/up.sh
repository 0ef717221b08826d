#!/usr/bin/env bash
# Bring up a real single-node Kubernetes cluster on this machine (no Docker):
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet,
# kube-proxy, local-path-provisioner and a private registry (login required, registry.sh)
# as host processes, CoreDNS as a Deployment, the default StorageClass `local-path` and
# the host-path class `standard`.
# Idempotent: returns quickly when the cluster is already up and healthy; on a running
# cluster with a daemon missing (e.g. one added later) it starts only what is missing.
#
#   BATON_CLUSTER_DIR  state dir (default /var/tmp/baton-cluster); kubeconfig at $BATON_CLUSTER_DIR/kubeconfig
#   BATON_CACHE        binary/image cache (default ~/.cache/baton)
#   UP_TIMEOUT         seconds to wait for each readiness step (default 180)
#   BATON_RUNC         OCI runtime binary for containerd (default /usr/bin/runc)
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=registry.sh
. "$(dirname "${BASH_SOURCE[0]}")/registry.sh"

T0=$(date +%s)

# ---------------------------------------------------------------- health checks
apiserver_ready() { kc get --raw /readyz --request-timeout=3s; }
node_ready() {
  [[ $(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null) == True ]]
}
coredns_ready() {
  [[ $(kc -n kube-system get deploy coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null) -ge 1 ]]
}
dns_answers() {
  [[ $(dig +short +time=1 +tries=1 @"$DNS_SVC_IP" kubernetes.default.svc.cluster.local A) == "$KUBERNETES_SVC_IP" ]]
}
# the provisioner has no health endpoint: ready once its controller logged that it
# started, in the log section of the current run (up.sh writes a '=== ' line per start)
local_path_ready() {
  is_running local-path-provisioner &&
    awk '/^=== /{s=0} /Started provisioner controller/{s=1} END{exit !s}' "$STATE/logs/local-path-provisioner.log"
}
all_running() { local d; for d in "${DAEMONS[@]}"; do is_running "$d" || return 1; done; }
healthy() {
  all_running && local_path_ready && apiserver_ready && node_ready && coredns_ready && dns_answers &&
    registry_ready
}

# ---------------------------------------------------------------- PKI
make_pki() {
  make_ca baton-cluster-ca
  mkcert apiserver kube-apiserver "" \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:$NODE_NAME,IP:127.0.0.1,IP:$NODE_IP,IP:$KUBERNETES_SVC_IP" server
  mkcert etcd-server etcd "" "DNS:localhost,IP:127.0.0.1" both
  mkcert apiserver-etcd-client kube-apiserver-etcd-client "" "" client
  mkcert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters "" client
  mkcert admin kubernetes-admin system:masters "" client
  mkcert controller-manager system:kube-controller-manager "" "" client
  mkcert scheduler system:kube-scheduler "" "" client
  mkcert kube-proxy system:kube-proxy "" "" client
  mkcert kubelet-client "system:node:$NODE_NAME" system:nodes "" client
  mkcert kubelet-server "$NODE_NAME" "" "DNS:$NODE_NAME,DNS:localhost,IP:$NODE_IP,IP:127.0.0.1" server
}

# ---------------------------------------------------------------- configs
# put FILE: stdin into FILE, which is only replaced when the content differs. kube-proxy
# watches its --config file and exits on any write to it, even of the same content, so
# re-running up.sh on a running cluster must leave unchanged files alone.
put() {
  cat >"$1.tmp"
  if cmp -s "$1.tmp" "$1"; then rm -f "$1.tmp"; else mv -f "$1.tmp" "$1"; fi
}

write_configs() {
  local c=$STATE/config
  put "$c/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  enable_unprivileged_ports = false
  netns_mounts_under_state_dir = true
  # This VM withholds CAP_SYS_RESOURCE, so nothing here may lower oom_score_adj below 0;
  # kubelet asks for -998 for pause containers (runc: "failed to update
  # /proc/self/oom_score_adj: Permission denied"). Clamp to containerd's own value.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "${BATON_RUNC:-/usr/bin/runc}"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
  # per-registry hosts.toml (registry.sh writes the private registry's: plain HTTP)
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$STATE/config/certs.d"
EOF

  put "$STATE/cni/net.d/10-baton.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "baton",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$STATE/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  # Pods never get the host's upstream resolver: no traffic may leave this machine.
  echo "nameserver $DNS_SVC_IP" | put "$c/resolv.conf"

  put "$c/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $PKI/kubelet-server.crt
tlsPrivateKeyFile: $PKI/kubelet-server.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
clusterDomain: cluster.local
clusterDNS: [$DNS_SVC_IP]
resolvConf: $c/resolv.conf
podLogsDir: $STATE/pod-logs
failSwapOn: false
serializeImagePulls: false
rotateCertificates: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
# images cannot be pulled again here: never garbage-collect them
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
maxPods: 110
EOF

  # local-path-provisioner: --config must end in .json (else it is parsed as JSON text);
  # re-read every 30 s. One node, so every node uses $LOCAL_PATH_DIR.
  mkdir -p "$c/local-path"
  put "$c/local-path/config.json" <<EOF
{
  "nodePathMap": [
    {"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$LOCAL_PATH_DIR"]}
  ],
  "cmdTimeoutSeconds": 120
}
EOF
  # helper-pod template (--helper-pod-file): the provisioner adds the hostPath volume,
  # the /script ConfigMap volume, command, env, nodeName and serviceAccountName. The image
  # comes only from here (v0.0.30 validates --helper-image but never uses it).
  put "$c/local-path/helperPod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
spec:
  priorityClassName: system-node-critical
  automountServiceAccountToken: false
  tolerations:
  - {key: node.kubernetes.io/disk-pressure, operator: Exists, effect: NoSchedule}
  containers:
  - name: helper-pod
    image: $STEP_IMAGE
    imagePullPolicy: Never
EOF

  put "$c/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $c/kube-proxy.kubeconfig
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# ---------------------------------------------------------------- daemons
start_etcd() {
  start_daemon etcd "$ETCD_BIN/etcd" \
    --name baton --data-dir "$STATE/etcd" \
    --listen-client-urls https://127.0.0.1:2379 --advertise-client-urls https://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster baton=http://127.0.0.1:2380 --initial-cluster-state new \
    --listen-metrics-urls http://127.0.0.1:2381 \
    --cert-file "$PKI/etcd-server.crt" --key-file "$PKI/etcd-server.key" \
    --client-cert-auth --trusted-ca-file "$PKI/ca.crt" \
    --snapshot-count 10000 --log-level warn
  wait_for "etcd health" etcd curl -sf --max-time 2 http://127.0.0.1:2381/health
}

start_control_plane() {
  start_daemon kube-apiserver "$K8S_BIN/kube-apiserver" \
    --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port "$APISERVER_PORT" \
    --etcd-servers https://127.0.0.1:2379 --etcd-cafile "$PKI/ca.crt" \
    --etcd-certfile "$PKI/apiserver-etcd-client.crt" --etcd-keyfile "$PKI/apiserver-etcd-client.key" \
    --client-ca-file "$PKI/ca.crt" \
    --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$PKI/ca.crt" \
    --kubelet-preferred-address-types InternalIP,Hostname \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --allow-privileged=true --anonymous-auth=true \
    --profiling=false --v=1
  wait_for "kube-apiserver /readyz" kube-apiserver apiserver_ready

  start_daemon kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/config/controller-manager.kubeconfig" \
    --authentication-kubeconfig "$STATE/config/controller-manager.kubeconfig" \
    --authorization-kubeconfig "$STATE/config/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" \
    --root-ca-file "$PKI/ca.crt" --service-account-private-key-file "$PKI/sa.key" \
    --use-service-account-credentials=true --enable-hostpath-provisioner=true \
    --allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" --profiling=false --v=1

  start_daemon kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$STATE/config/scheduler.kubeconfig" \
    --authentication-kubeconfig "$STATE/config/scheduler.kubeconfig" \
    --authorization-kubeconfig "$STATE/config/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
}

start_node() {
  log "sysctl: enabling IP forwarding and bridge netfilter"
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 || log "warning: bridge-nf-call-iptables not settable"

  # a containerd started before its config last changed (e.g. a cluster from before the
  # registry) is restarted to read it; running containers keep running (their shims stay)
  if is_running containerd && [[ $STATE/config/containerd.toml -nt $(pidfile containerd) ]]; then
    log "containerd.toml changed since containerd started: restarting containerd"
    stop_daemon containerd 30
  fi
  start_daemon containerd /usr/bin/containerd --config "$STATE/config/containerd.toml"
  wait_for "containerd socket" containerd ctr --address "$CONTAINERD_SOCK" version
  log "importing images"
  BATON_CLUSTER_DIR=$STATE "$REPO/hack/images/build.sh"

  start_daemon kubelet "$K8S_BIN/kubelet" \
    --config "$STATE/config/kubelet.yaml" \
    --kubeconfig "$STATE/config/kubelet.kubeconfig" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1

  start_daemon kube-proxy "$K8S_BIN/kube-proxy" --config "$STATE/config/kube-proxy.yaml" --v=1
}

# local-path-provisioner on the host with the admin kubeconfig; helper pods (step image,
# root, hostPath) in $LOCAL_PATH_NS. Needs the addons applied (namespace, ConfigMap with the
# setup/teardown scripts, ServiceAccount) and a kubelet to run the helper pods.
start_local_path() {
  mkdir -p "$LOCAL_PATH_DIR"
  start_daemon local-path-provisioner "$LOCAL_PATH_BIN/local-path-provisioner" --debug start \
    --kubeconfig "$KUBECONFIG_ADMIN" \
    --provisioner-name rancher.io/local-path \
    --namespace "$LOCAL_PATH_NS" \
    --configmap-name local-path-config \
    --service-account-name local-path-provisioner-service-account \
    --config "$STATE/config/local-path/config.json" \
    --helper-pod-file "$STATE/config/local-path/helperPod.yaml" \
    --helper-image "$STEP_IMAGE" \
    --worker-threads 4
  wait_for "local-path-provisioner controller started" local-path-provisioner local_path_ready
}

apply_addons() {
  log "applying addons: CoreDNS, local-path objects, StorageClasses local-path (default) + standard"
  sed -e "s|@COREDNS_IMAGE@|$COREDNS_IMAGE|g" -e "s|@DNS_SVC_IP@|$DNS_SVC_IP|g" \
    "$HERE/addons/coredns.yaml" | kc apply -f - >/dev/null
  sed -e "s|@LOCAL_PATH_DIR@|$LOCAL_PATH_DIR|g" "$HERE/addons/local-path.yaml" | kc apply -f - >/dev/null
  kc apply -f "$HERE/addons/storageclass.yaml" >/dev/null
}

main() {
  mkdir -p "$STATE"
  exec 8>"$STATE/.up.lock"
  flock 8 || true

  if [[ -f $KUBECONFIG_ADMIN ]] && healthy; then
    log "cluster in $STATE is already up and healthy ($(($(date +%s) - T0))s)"
    log "export KUBECONFIG=$KUBECONFIG_ADMIN"
    return 0
  fi

  local mode=warm b
  for b in "$K8S_BIN"/{kube-apiserver,kube-controller-manager,kube-scheduler,kubelet,kube-proxy,kubectl} \
    "$ETCD_BIN/etcd" "$BATON_CACHE/coredns-$COREDNS_VERSION/bin/coredns" "$CRI_CLEANUP" \
    "$LOCAL_PATH_BIN/local-path-provisioner"; do
    [[ -x $b ]] || mode=cold
  done
  log "== building/installing dependencies ($mode)"
  "$HERE/build.sh"
  local tb=$(($(date +%s) - T0))

  mkdir -p "$STATE"/{logs,pids,config,etcd,kubelet,pod-logs,run/containerd,containerd,cni/net.d,cni/ipam}
  chmod 700 "$STATE/etcd"
  make_pki
  kubeconfig admin admin
  kubeconfig controller-manager controller-manager
  kubeconfig scheduler scheduler
  kubeconfig kube-proxy kube-proxy
  kubeconfig kubelet kubelet-client
  write_configs
  write_registry_config

  start_etcd
  start_control_plane
  apply_addons
  start_node
  start_local_path
  start_registry

  wait_for "node $NODE_NAME Ready" "kubelet containerd" node_ready
  wait_for "CoreDNS Ready" "kubelet containerd kube-proxy" coredns_ready
  wait_for "DNS answers kubernetes.default.svc.cluster.local via $DNS_SVC_IP" "kube-proxy kubelet" dns_answers
  wait_for "default ServiceAccount" kube-controller-manager kc get serviceaccount default -n default

  local total=$(($(date +%s) - T0))
  log "cluster up in ${total}s ($mode start: ${tb}s build/deps check, $((total - tb))s bring-up)"
  log "export KUBECONFIG=$KUBECONFIG_ADMIN"
}

main "$@"; exit $?
