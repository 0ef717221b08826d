#!/usr/bin/env bash
# `make bench`: build what is missing (cached), start the bench control plane
# (hack/bench/up.sh), run the driver (hack/bench/bench.py: the workloads, the table,
# bench/results/<date>.{md,json,png}), then stop everything it started and remove the
# bench state, unless BENCH_KEEP=1. Settings: hack/bench/README.md.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"   # BENCH_HERE: this directory (HERE is hack/cluster's)

cd "$REPO"
# A build of the tree only when it is what runs (BATON_BIN unset).
[[ $BATON_BIN != "$REPO/target/release/baton" ]] || cargo build --release --bin baton
"$BENCH_HERE/up.sh"
finish() { [[ ${BENCH_KEEP:-0} == 1 ]] || "$BENCH_HERE/down.sh"; }
trap finish EXIT
BATON_BENCH_DIR=$STATE BATON_PORT=$BATON_PORT "$BENCH_PY" "$BENCH_HERE/bench.py"
