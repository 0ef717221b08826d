#!/usr/bin/env bash
# End-to-end checks against a cluster started by hack/cluster/up.sh:
#  1. a pod from localhost/baton/step:latest (imagePullPolicy Never) prints and resolves
#     kubernetes.default.svc.cluster.local through CoreDNS
#  2. a PVC on the default StorageClass binds; one pod writes a file, a second reads it
#  3. a restricted-PSS pod (uid 1000, seccomp RuntimeDefault, drop ALL) runs in a
#     namespace enforcing pod-security `restricted`
#  4. a pod reaches the apiserver through the `kubernetes` Service ClusterIP
# Uses namespaces baton-smoke and baton-smoke-restricted, deleted at the end.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

NS=baton-smoke
NSR=baton-smoke-restricted
TIMEOUT=${SMOKE_TIMEOUT:-120s}
fail() { log "FAIL: $*"; kc get pods -A -o wide >&2 || true; exit 1; }

# run_pod NS NAME YAML-SPEC-BODY: create a pod, wait for it to succeed, print its logs
run_pod() {
  local ns=$1 name=$2 spec=$3
  kc -n "$ns" delete pod "$name" --ignore-not-found --wait=true >/dev/null
  printf 'apiVersion: v1\nkind: Pod\nmetadata:\n  name: %s\nspec:\n%s\n' "$name" "$spec" | kc -n "$ns" apply -f - >/dev/null
  if ! kc -n "$ns" wait pod "$name" --for=jsonpath='{.status.phase}'=Succeeded --timeout="$TIMEOUT" >/dev/null; then
    kc -n "$ns" describe pod "$name" >&2 || true
    kc -n "$ns" logs "$name" >&2 || true
    fail "pod $ns/$name did not succeed"
  fi
  kc -n "$ns" logs "$name"
}

main() {
  [[ -f $KUBECONFIG_ADMIN ]] || die "no kubeconfig at $KUBECONFIG_ADMIN: run hack/cluster/up.sh"
  kc delete namespace "$NS" "$NSR" --ignore-not-found --wait=true >/dev/null
  kc create namespace "$NS" --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc create namespace "$NSR" --dry-run=client -o yaml | kc apply -f - >/dev/null
  kc label namespace "$NSR" --overwrite pod-security.kubernetes.io/enforce=restricted \
    pod-security.kubernetes.io/enforce-version=latest >/dev/null
  # the default ServiceAccount appears asynchronously in a new namespace
  local _; for _ in $(seq 60); do kc -n "$NS" get sa default >/dev/null 2>&1 && kc -n "$NSR" get sa default >/dev/null 2>&1 && break; sleep 0.5; done

  log "1. step image + cluster DNS"
  local out
  out=$(run_pod "$NS" hello "  restartPolicy: Never
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'echo hello; nslookup kubernetes.default.svc.cluster.local']")
  echo "$out"
  grep -q '^hello$' <<<"$out" || fail "no hello in output"
  grep -q "Address: $KUBERNETES_SVC_IP" <<<"$out" || fail "nslookup did not return $KUBERNETES_SVC_IP"

  log "2. PVC on the default StorageClass, write then read from a second pod"
  kc -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Mi}}
EOF
  kc -n "$NS" wait pvc data --for=jsonpath='{.status.phase}'=Bound --timeout="$TIMEOUT" >/dev/null ||
    fail "PVC did not bind"
  kc -n "$NS" get pvc data
  local vol="    volumeMounts: [{name: d, mountPath: /data}]
  volumes: [{name: d, persistentVolumeClaim: {claimName: data}}]"
  run_pod "$NS" writer "  restartPolicy: Never
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'echo persisted-\$(date +%s) > /data/file; cat /data/file']
$vol"
  out=$(run_pod "$NS" reader "  restartPolicy: Never
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'cat /data/file']
$vol")
  echo "read back: $out"
  grep -q '^persisted-' <<<"$out" || fail "second pod did not read the file"

  log "3. restricted Pod Security Standard pod as uid 1000"
  out=$(run_pod "$NSR" restricted "  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'id; echo ok > /tmp/x && cat /tmp/x']
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}")
  echo "$out"
  grep -q 'uid=1000' <<<"$out" || fail "restricted pod did not run as uid 1000"
  # and PodSecurity admission really enforces: a privileged pod must be rejected
  if printf 'apiVersion: v1\nkind: Pod\nmetadata: {name: priv}\nspec:\n  containers:\n  - {name: c, image: %s, securityContext: {privileged: true}}\n' "$STEP_IMAGE" |
    kc -n "$NSR" apply --dry-run=server -f - >/dev/null 2>&1; then
    fail "PodSecurity admission accepted a privileged pod in $NSR"
  fi
  log "   privileged pod rejected by PodSecurity admission: ok"

  log "4. apiserver through the kubernetes Service ClusterIP"
  out=$(run_pod "$NS" apicheck "  restartPolicy: Never
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'nc -w 5 $KUBERNETES_SVC_IP 443 </dev/null && echo tcp-ok; wget -q -O - --no-check-certificate https://$KUBERNETES_SVC_IP:443/version']")
  echo "$out"
  grep -q tcp-ok <<<"$out" || fail "no TCP connection to $KUBERNETES_SVC_IP:443"
  grep -q "\"gitVersion\": \"$K8S_VERSION\"" <<<"$out" || fail "/version via ClusterIP did not report $K8S_VERSION"

  kc delete namespace "$NS" "$NSR" --wait=false >/dev/null
  log "smoke: all checks passed"
}

main "$@"; exit $?
