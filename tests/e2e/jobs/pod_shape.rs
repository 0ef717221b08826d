//! Shaping step pods: a Job-level `podTemplate` (extra hosts, labels) with a
//! step's own over it, a tmpfs `emptyDir` with a size limit, and a read-only
//! ConfigMap volume — seen from inside the step.

#[allow(clippy::wildcard_imports)]
use super::*;
use k8s_openapi::api::core::v1::ConfigMap;

#[tokio::test]
async fn a_step_sees_its_pod_template_and_volumes() {
    in_namespace("job-pod-shape", |ns| async move {
        let _s = setup_with(&ns, "kubernetes").await?;
        let config: ConfigMap = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "app" }, "data": { "greeting": "hello from a configmap" }
        }))?;
        Api::<ConfigMap>::namespaced(ns.client.clone(), &ns.name)
            .create(&PostParams::default(), &config)
            .await?;
        let mut shaped = job("shaped", "pool=e2e", serde_json::json!([{
            "name": "look",
            "image": crate::support::STEP_IMAGE,
            "podTemplate": { "hostAliases": [{ "ip": "10.0.0.9", "hostnames": ["db.step.test"] }] },
            "volumes": [
                { "name": "scratch", "mountPath": "/scratch", "emptyDir": { "medium": "Memory", "sizeLimit": "8Mi" } },
                { "name": "conf", "mountPath": "/etc/app", "configMap": { "name": "app" } },
            ],
            "script": concat!(
                "echo tmpfs=$(awk '$2 == \"/scratch\" {print $3}' /proc/mounts) >> $BATON_OUTPUT\n",
                "echo data > /scratch/f && echo scratch=$(cat /scratch/f) >> $BATON_OUTPUT\n",
                "echo conf=$(cat /etc/app/greeting | tr ' ' '-') >> $BATON_OUTPUT\n",
                "if touch /etc/app/x 2>/dev/null; then echo conf_ro=no; else echo conf_ro=yes; fi >> $BATON_OUTPUT\n",
                "echo step_host=$(awk '$2 == \"db.step.test\" {print $1}' /etc/hosts) >> $BATON_OUTPUT\n",
                "echo job_hosts=$(grep -c db.job.test /etc/hosts) >> $BATON_OUTPUT\n",
            ),
        }]))?;
        // The Job's template says db.job.test; the step's own replaces it.
        shaped.spec.pod_template = Some(serde_json::from_value(serde_json::json!({
            "hostAliases": [{ "ip": "10.0.0.8", "hostnames": ["db.job.test"] }],
            "labels": { "team": "ci" },
        }))?);
        apply(&ns, &shaped).await?;

        let j = wait_for(&jobs(&ns), "shaped", phase_is(JobPhase::Succeeded), 120).await?;
        let out = j.status.context("status")?.outputs;
        let get = |k: &str| out.get(k).map(String::as_str);
        ensure!(get("tmpfs") == Some("tmpfs"), "/scratch is a tmpfs: {out:?}");
        ensure!(get("scratch") == Some("data"), "{out:?}");
        ensure!(get("conf") == Some("hello-from-a-configmap"), "{out:?}");
        ensure!(get("conf_ro") == Some("yes"), "the ConfigMap is read-only: {out:?}");
        ensure!(get("step_host") == Some("10.0.0.9"), "{out:?}");
        ensure!(get("job_hosts") == Some("0"), "the step's hostAliases replace the Job's: {out:?}");
        Ok(())
    })
    .await;
}
