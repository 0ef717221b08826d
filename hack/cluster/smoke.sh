#!/usr/bin/env bash
# End-to-end checks against a cluster started by hack/cluster/up.sh:
#  1. a pod from localhost/baton/step:latest (imagePullPolicy Never) prints and resolves
#     kubernetes.default.svc.cluster.local through CoreDNS
#  2. a PVC on StorageClass `standard` (in-tree host-path, 0750 root dirs) binds; one root
#     pod writes a file, a second reads it
#  3. a restricted-PSS pod (uid 1000, seccomp RuntimeDefault, drop ALL) runs in a
#     namespace enforcing pod-security `restricted`
#  4. a pod reaches the apiserver through the `kubernetes` Service ClusterIP
#  5. a PVC without storageClassName gets the default class `local-path`; a restricted
#     pod (uid 1000) writes a file, a second restricted pod reads it; deleting the PVC
#     removes the PV and its directory on the host
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

  log "2. PVC on StorageClass standard (host-path), write then read from a second pod"
  kc -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec:
  storageClassName: standard
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

  log "5. PVC on the default StorageClass (local-path) shared by two restricted uid-1000 pods"
  kc -n "$NSR" apply -f - >/dev/null <<EOF
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: workspace}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Mi}}
EOF
  local sc
  sc=$(kc -n "$NSR" get pvc workspace -o jsonpath='{.spec.storageClassName}')
  [[ $sc == local-path ]] || fail "PVC without storageClassName got class '$sc', not local-path"
  local rvol="    volumeMounts: [{name: w, mountPath: /workspace}]
    securityContext:
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL]}
  volumes: [{name: w, persistentVolumeClaim: {claimName: workspace}}]"
  local rsec="  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    seccompProfile: {type: RuntimeDefault}"
  out=$(run_pod "$NSR" lp-writer "$rsec
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'id -u; echo workspace-\$(date +%s) > /workspace/file && cat /workspace/file']
$rvol")
  echo "$out"
  grep -q '^workspace-' <<<"$out" || fail "restricted pod could not write to the local-path PVC"
  out=$(run_pod "$NSR" lp-reader "$rsec
  containers:
  - name: c
    image: $STEP_IMAGE
    imagePullPolicy: Never
    command: [sh, -c, 'cat /workspace/file']
$rvol")
  echo "read back: $out"
  grep -q '^workspace-' <<<"$out" || fail "second restricted pod did not read the file"
  local pv dir
  pv=$(kc -n "$NSR" get pvc workspace -o jsonpath='{.spec.volumeName}')
  dir=$(kc get pv "$pv" -o jsonpath='{.spec.hostPath.path}')
  [[ -n $pv && $dir == "$LOCAL_PATH_DIR"/* && -d $dir ]] || fail "PV '$pv' path '$dir' is not a directory under $LOCAL_PATH_DIR"
  log "   $pv -> $dir ($(stat -c '%a %u:%g' "$dir"); file $(stat -c '%u:%g' "$dir/file"))"
  kc -n "$NSR" delete pod lp-writer lp-reader --wait=true >/dev/null
  kc -n "$NSR" delete pvc workspace --wait=true --timeout="$TIMEOUT" >/dev/null || fail "PVC not deleted"
  kc wait --for=delete "pv/$pv" --timeout="$TIMEOUT" >/dev/null 2>&1 || fail "PV $pv not deleted"
  [[ ! -e $dir ]] || fail "PV $pv deleted but $dir is still on the host"
  log "   PVC deleted: PV and $dir removed"

  kc delete namespace "$NS" "$NSR" --wait=false >/dev/null
  log "smoke: all checks passed"
}

main "$@"; exit $?
