#!/usr/bin/env bash
# A SeaweedFS S3 server on loopback for the store benchmark (make bench-local):
#   hack/s3/weed.sh start DIR   start it (data, pid and log under DIR), wait until
#                               bucket `bench` exists, print the environment to use
#   hack/s3/weed.sh stop DIR    stop it by its pid file
# The binary comes from hack/cluster/build.sh (BUILD_ONLY=seaweedfs builds it alone).
set -euo pipefail
# shellcheck source=../cluster/versions.env
. "$(dirname "${BASH_SOURCE[0]}")/../cluster/versions.env"
WEED=$BATON_CACHE/seaweedfs-$SEAWEEDFS_VERSION/bin/weed
cmd=${1:?start or stop}; dir=${2:?a directory}
mkdir -p "$dir"
case $cmd in
start)
  [[ -x $WEED ]] || BUILD_ONLY=seaweedfs "$(dirname "${BASH_SOURCE[0]}")/../cluster/build.sh" >&2
  key=bench-$RANDOM$RANDOM; secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Read","Write","List","Admin"]}]}\n' \
    "$key" "$secret" >"$dir/s3.json"
  mkdir -p "$dir/data"
  "$WEED" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -master.port=19433 \
    -volume.port=19180 -filer.port=19988 -s3.port=19910 -s3.config="$dir/s3.json" \
    -bucket=bench -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.iam=false >"$dir/weed.log" 2>&1 &
  echo $! >"$dir/weed.pid"
  for _ in $(seq 120); do
    curl -fsS -o /dev/null "http://127.0.0.1:19988/buckets/bench/" 2>/dev/null && break
    sleep 0.5
  done
  curl -fsS -o /dev/null "http://127.0.0.1:19988/buckets/bench/" || { tail "$dir/weed.log" >&2; exit 1; }
  echo "export AWS_ACCESS_KEY_ID=$key AWS_SECRET_ACCESS_KEY=$secret AWS_REGION=us-east-1"
  echo "export AWS_ENDPOINT_URL=http://127.0.0.1:19910 AWS_ALLOW_HTTP=true BATON_BENCH_STORE=s3://bench"
  ;;
stop)
  [[ -f $dir/weed.pid ]] && kill "$(cat "$dir/weed.pid")" 2>/dev/null || true
  rm -f "$dir/weed.pid"
  ;;
*) echo "usage: $0 start|stop DIR" >&2; exit 2 ;;
esac
