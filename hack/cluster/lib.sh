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
  # NAME may be BINARY@ROLE (baton@controller): the binary is what runs
  [[ ${exe##*/} == "${1%%@*}" || ${exe##*/} == "${1%%@*} (deleted)" ]] || return 1
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

# ---------------------------------------------------------------- daemons and PKI
# (shared with hack/bench/up.sh: STATE, PKI, NODE_IP, APISERVER_PORT say which cluster)
UP_TIMEOUT=${UP_TIMEOUT:-180}
T0=${T0:-$(date +%s)}

# wait_for DESC LOGNAME CMD...: retry CMD until it succeeds or UP_TIMEOUT passes
wait_for() {
  local desc=$1 logname=$2; shift 2
  local deadline=$(($(date +%s) + UP_TIMEOUT))
  log "waiting for $desc"
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      log "ERROR: timed out after ${UP_TIMEOUT}s waiting for $desc"
      local f
      for f in $logname; do
        [[ -f $STATE/logs/$f.log ]] && { log "--- tail of $STATE/logs/$f.log"; tail -n 40 "$STATE/logs/$f.log" >&2; }
      done
      exit 1
    fi
    sleep 0.5
  done
  log "$desc: ok ($(($(date +%s) - T0))s)"
}

# start_daemon NAME BINARY ARGS...: start detached in its own session, log + pid file
start_daemon() {
  local name=$1 bin=$2; shift 2
  local pid
  if pid=$(pid_of "$name"); then log "$name already running (pid $pid)"; return; fi
  log "starting $name"
  echo "=== $(date -Is) $bin $*" >>"$STATE/logs/$name.log"
  # Daemons keep no inherited descriptor (a caller's flock among them would stay
  # locked for as long as the cluster runs).
  ( for fd in /proc/$BASHPID/fd/*; do fd=${fd##*/}
      if ((fd > 2)); then eval "exec $fd>&-" 2>/dev/null || true; fi
    done
    exec setsid "$bin" "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null ) &
  pid=$!
  echo "$pid" >"$(pidfile "$name")"
  # The subshell closes descriptors before it execs: until then its exe is bash,
  # which a loaded machine can stretch past any fixed sleep. Wait for the exec,
  # then give the daemon a moment to fail on its flags or its port.
  local i
  for ((i = 0; i < 100; i++)); do
    is_running "$name" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  is_running "$name" && sleep 0.2
  is_running "$name" || { tail -n 30 "$STATE/logs/$name.log" >&2; die "$name exited at once (log: $STATE/logs/$name.log)"; }
}

# make_ca CN: the CA (named CN) and the service-account key pair in $PKI, once
make_ca() {
  mkdir -p "$PKI"; chmod 700 "$PKI"
  if [[ ! -f $PKI/ca.crt ]]; then
    log "creating CA, certificates and service-account key in $PKI"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/ca.key" 2>/dev/null
    openssl req -x509 -new -key "$PKI/ca.key" -subj "/CN=$1" -days 3650 -sha256 \
      -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" \
      -out "$PKI/ca.crt" 2>/dev/null
  fi
  [[ -f $PKI/sa.key ]] || {
    openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/sa.key" 2>/dev/null
    openssl pkey -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  }
}

# mkcert NAME CN O "SAN list or empty" serverAuth|clientAuth|both
mkcert() {
  local name=$1 cn=$2 o=$3 san=$4 usage=$5
  [[ -f $PKI/$name.crt && -f $PKI/$name.key ]] && return
  local eku=clientAuth subj="/CN=$cn"
  [[ -n $o ]] && subj="/O=$o$subj"
  case $usage in server) eku=serverAuth ;; both) eku="serverAuth,clientAuth" ;; esac
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n $san ]] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$PKI/$name.key" 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/ca.crt" -CAkey "$PKI/ca.key" -CAcreateserial \
    -days 3650 -sha256 -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

# kubeconfig NAME CERT: writes $STATE/config/NAME.kubeconfig (admin goes to $KUBECONFIG_ADMIN)
kubeconfig() {
  local name=$1 cert=$2 out=$STATE/config/$1.kubeconfig
  [[ $name == admin ]] && out=$KUBECONFIG_ADMIN
  [[ -f $out ]] && return
  local k=("$KUBECTL" --kubeconfig "$out.tmp")
  rm -f "$out.tmp"
  "${k[@]}" config set-cluster baton --server "https://$NODE_IP:$APISERVER_PORT" \
    --certificate-authority "$PKI/ca.crt" --embed-certs >/dev/null
  "${k[@]}" config set-credentials "$name" --client-certificate "$PKI/$cert.crt" \
    --client-key "$PKI/$cert.key" --embed-certs >/dev/null
  "${k[@]}" config set-context baton --cluster baton --user "$name" >/dev/null
  "${k[@]}" config use-context baton >/dev/null
  chmod 600 "$out.tmp"; mv "$out.tmp" "$out"
}
