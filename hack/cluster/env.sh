#!/usr/bin/env bash
# Print shell exports for using the local cluster: eval "$(hack/cluster/env.sh)"
# (KUBECONFIG, and PATH with the cached kubectl, helm, etcd and kube-* binaries first).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
echo "export KUBECONFIG=$KUBECONFIG_ADMIN"
echo "export PATH=$K8S_BIN:$BATON_CACHE/helm-$HELM_VERSION/bin:$ETCD_BIN:\$PATH"
