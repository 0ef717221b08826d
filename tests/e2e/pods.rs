//! The node really runs pods from the locally built images: the baton image, and the
//! step image writing to and reading from a host-path-provisioned volume.

use anyhow::Context;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, PostParams};

/// The StorageClass backed by kube-controller-manager's `kubernetes.io/host-path` provisioner.
const HOST_PATH_CLASS: &str = "standard";

use crate::support::{
    BATON_IMAGE, STEP_IMAGE, in_namespace, in_namespace_with_pss, restricted_pod, run_pod, wait_for,
};

#[tokio::test]
async fn baton_image_prints_its_version() {
    in_namespace("version", |ns| async move {
        let pod = restricted_pod(
            "version",
            BATON_IMAGE,
            &["/usr/local/bin/baton", "--version"],
            serde_json::json!({}),
        )?;
        let (phase, logs) = run_pod(&ns, pod, 120).await?;
        anyhow::ensure!(phase == "Succeeded", "pod ended {phase}");
        let expected = format!("baton {}", env!("CARGO_PKG_VERSION"));
        anyhow::ensure!(
            logs.trim() == expected,
            "expected {expected:?}, log was {logs:?}"
        );
        Ok(())
    })
    .await;
}

/// The in-tree host-path provisioner creates each volume's directory root-owned with
/// mode 0750 and applies no fsGroup, so only a root container can write to it: this
/// test runs its pods as root, in a `baseline` namespace (`restricted` forbids root).
#[tokio::test]
async fn a_host_path_volume_written_by_one_pod_is_read_by_the_next() {
    in_namespace_with_pss("volume", "baseline", |ns| async move {
        let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ns.client.clone(), &ns.name);
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "workspace" },
            "spec": {
                "storageClassName": HOST_PATH_CLASS,
                "accessModes": ["ReadWriteOnce"],
                "resources": { "requests": { "storage": "64Mi" } }
            }
        }))?;
        pvcs.create(&PostParams::default(), &pvc).await.context("create PVC")?;

        let volume = serde_json::json!({ "spec": {
            "securityContext": { "runAsNonRoot": false, "runAsUser": 0, "runAsGroup": 0 },
            "volumes": [{ "name": "ws", "persistentVolumeClaim": { "claimName": "workspace" } }],
            "containers": [{ "name": "main", "volumeMounts": [{ "name": "ws", "mountPath": "/workspace" }] }]
        }});
        let write = restricted_pod(
            "writer",
            STEP_IMAGE,
            &["sh", "-e", "-c", "for i in 1 2 3; do echo line-$i >> /workspace/out.txt; done; echo wrote"],
            volume.clone(),
        )?;
        let (phase, logs) = run_pod(&ns, write, 180).await?;
        anyhow::ensure!(phase == "Succeeded", "writer ended {phase}: {logs}");

        let bound = wait_for(&pvcs, "workspace", |p: Option<&PersistentVolumeClaim>| {
            p.and_then(|p| p.status.as_ref()?.phase.as_deref()) == Some("Bound")
        }, 30)
        .await?;
        let pv = bound.spec.and_then(|s| s.volume_name).context("bound PVC names no volume")?;
        anyhow::ensure!(pv.starts_with("pvc-"), "PVC bound to {pv}, not a provisioned volume");

        let read = restricted_pod("reader", STEP_IMAGE, &["cat", "/workspace/out.txt"], volume)?;
        let (phase, logs) = run_pod(&ns, read, 120).await?;
        anyhow::ensure!(phase == "Succeeded", "reader ended {phase}: {logs}");
        anyhow::ensure!(logs == "line-1\nline-2\nline-3\n", "read back {logs:?}");
        Ok(())
    })
    .await;
}
