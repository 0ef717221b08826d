#!/usr/bin/env bash
# `make bench`: build what is missing (cached), start the bench control plane
# (hack/bench/up.sh), run the driver (hack/bench/bench.py: the workloads, the table,
# bench/results/<date>.{md,json,png}), then stop everything it started and remove the
# bench state, unless BENCH_KEEP=1. Settings: hack/bench/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"

cd "$REPO"
cargo build --release --bin baton
"$HERE/up.sh"
finish() { [[ ${BENCH_KEEP:-0} == 1 ]] || "$HERE/down.sh"; }
trap finish EXIT
BATON_BENCH_DIR=$STATE "$BENCH_PY" "$HERE/bench.py"
