#!/usr/bin/env bash
# The systems under test on the bench cluster (hack/bench/up.sh first), by pid file:
#   ctl.sh start default|matched   (re)start kube-controller-manager and Tekton's controller
#                                  at that client QPS, start Baton's controller + runners
#   ctl.sh start-baton | kill-baton | restart-baton   Baton's controller and runners
#                                  (kill: SIGKILL)
#   ctl.sh restart-tekton          Tekton's controller, fresh, at the last start's QPS
#   ctl.sh stop                    stop Baton's and Tekton's processes
# BENCH_MATCHED_QPS (default 50): the client QPS (= burst) of "matched", Baton's controller's
# --kube-api-qps too (its runners have no such flag: 2 requests per Job across all four).
# BENCH_RUNNERS (default 4) runners of BENCH_RUNNER_SLOTS (default 1000) Jobs each.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
RUNNERS=${BENCH_RUNNERS:-4}
SLOTS=${BENCH_RUNNER_SLOTS:-1000}
MATCHED_QPS=${BENCH_MATCHED_QPS:-50}
NS=bench-baton

as() { local who=$1; shift; KUBECONFIG=$STATE/config/$who.kubeconfig "$@"; }

start_tekton() {
  local qps=() a=()
  # Tekton doubles what it is given (cmd/controller: "no of controllers"): halve it
  [[ $1 == matched ]] && qps=(-kube-api-qps "$((MATCHED_QPS / 2))" -kube-api-burst "$((MATCHED_QPS / 2))")
  for a in entrypoint nop sidecarlogresults workingdirinit shell; do qps+=("-$a-image" "bench.invalid/tekton-$a"); done
  qps+=(-shell-image-win bench.invalid/tekton-shell-win)
  SYSTEM_NAMESPACE=tekton-pipelines CONFIG_LOGGING_NAME=config-logging \
    CONFIG_OBSERVABILITY_NAME=config-observability CONFIG_FEATURE_FLAGS_NAME=feature-flags \
    CONFIG_LEADERELECTION_NAME=config-leader-election-controller CONFIG_DEFAULTS_NAME=config-defaults \
    CONFIG_SPIRE=config-spire METRICS_DOMAIN=tekton.dev/pipeline KUBERNETES_MIN_VERSION=v1.28.0 \
    PROFILING_PORT=${TEKTON_PORTS[0]} METRICS_PROMETHEUS_PORT=${TEKTON_PORTS[1]} \
    METRICS_PROMETHEUS_HOST=127.0.0.1 PROBES_PORT=${TEKTON_PORTS[2]} \
    start_daemon tekton-controller "$TEKTON_DIR/bin/tekton-controller" \
    -kubeconfig "$STATE/config/tekton-controller.kubeconfig" -disable-ha "${qps[@]}"
}

start_baton() {
  mkdir -p "$STATE/baton"
  local limit=()
  [[ $(cat "$STATE/qps-mode" 2>/dev/null) == matched ]] && limit=(--kube-api-qps "$MATCHED_QPS")
  as baton-controller start_daemon baton@controller "$BATON_BIN" controller \
    --listen "127.0.0.1:$BATON_PORT" --namespace "$NS" --data-dir "$STATE/baton/data" "${limit[@]}"
  wait_for "baton controller /readyz" baton@controller curl -sf "http://127.0.0.1:$BATON_PORT/readyz"
  local i name tok
  for ((i = 0; i < RUNNERS; i++)); do
    name=r$i tok=$STATE/baton/$name.token
    if [[ ! -s $tok ]]; then   # a token is printed once: without our copy, mint a new one
      kc -n "$NS" delete runnertoken "$name" --ignore-not-found >/dev/null
      KUBECONFIG=$KUBECONFIG_ADMIN "$BATON_BIN" token create "$name" -n "$NS" --runner "$name" \
        --labels pool=bench >"$tok.new" && mv "$tok.new" "$tok"
    fi
    BATON_RUNNER_TOKEN=$(<"$tok") as baton-runner start_daemon "baton@runner-$i" "$BATON_BIN" runner \
      --server "http://127.0.0.1:$BATON_PORT" --name "$name" --namespace "$NS" \
      --state-dir "$STATE/baton/$name" --labels pool=bench --backend kubernetes \
      --health-addr "127.0.0.1:0"
  done
  for ((i = 0; i < RUNNERS; i++)); do
    wait_for "Runner r$i registered" "baton@runner-$i" kc -n "$NS" get runner "r$i"
    kc -n "$NS" patch runner "r$i" --type merge -p "{\"spec\":{\"maxConcurrentJobs\":$SLOTS}}" >/dev/null
  done
}

kill_baton() {
  local f
  for f in "$STATE"/pids/baton@*.pid; do
    [[ -e $f ]] || continue
    local name; name=$(basename "$f" .pid)
    local pid; if pid=$(pid_of "$name"); then kill -KILL "$pid"; fi
    rm -f "$f"
  done
}

stop_systems() {
  local f
  for f in "$STATE"/pids/baton@*.pid; do [[ -e $f ]] && stop_daemon "$(basename "$f" .pid)" 10; done
  stop_daemon tekton-controller 10
}

case ${1:-} in
  start)
    mode=${2:?default or matched}
    stop_systems
    stop_daemon kube-controller-manager
    if [[ $mode == matched ]]; then start_kcm --kube-api-qps "$MATCHED_QPS" --kube-api-burst "$MATCHED_QPS"; else start_kcm; fi
    start_tekton "$mode"
    echo "$mode" >"$STATE/qps-mode"
    start_baton ;;
  start-baton) start_baton ;;
  restart-baton) for f in "$STATE"/pids/baton@*.pid; do [[ -e $f ]] && stop_daemon "$(basename "$f" .pid)" 10; done
    start_baton ;;
  restart-tekton) stop_daemon tekton-controller 10; start_tekton "$(cat "$STATE/qps-mode")" ;;
  kill-baton) kill_baton ;;
  stop) stop_systems ;;
  *) sed -n '2,12p' "$0"; exit 2 ;;
esac
