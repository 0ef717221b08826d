//! Private images on step pods, against the cluster's own registry
//! (`hack/cluster/registry.sh`: distribution with htpasswd auth on loopback, the
//! step image pushed under a private name). With the Job's pull secret the step
//! pulls and runs; with a missing or wrong one it ends `ImagePullFailed` carrying
//! the registry's refusal. Steps pull with `imagePullPolicy: Always`, so an image a
//! test pulled before never stands in for a pull.

use std::time::Instant;

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::registry::{pull_secret, registry};

/// A one-step Job on the e2e pool pulling `image` always, with `secret` if given.
fn private_job(name: &str, image: &str, secret: &str) -> anyhow::Result<Job> {
    let mut j = job(
        name,
        "pool=e2e",
        serde_json::json!([
            { "name": "pull", "image": image, "imagePullPolicy": "Always", "script": "echo pulled from the private registry" },
        ]),
    )?;
    j.spec.image_pull_secrets = Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
        name: secret.to_owned(),
    }]);
    Ok(j)
}

#[tokio::test]
async fn a_step_pulls_from_the_private_registry_with_the_jobs_pull_secret() {
    in_namespace("job-private-image", |ns| async move {
        let reg = registry()?;
        let s = setup_with(&ns, "kubernetes").await?;
        pull_secret(&ns, "registry-login", &reg, &reg.password).await?;
        apply(&ns, &private_job("private", &reg.image, "registry-login")?).await?;

        let j = wait_for(&jobs(&ns), "private", phase_is(JobPhase::Succeeded), 120).await?;
        let step = j
            .status
            .context("status")?
            .steps
            .into_iter()
            .next()
            .context("step")?;
        ensure!(step.reason.as_deref() == Some("Completed"), "{step:?}");
        let pod = step_pods(&ns)
            .get(step.pod_name.as_deref().context("pod name")?)
            .await?;
        let spec = pod.spec.context("pod spec")?;
        ensure!(
            spec.containers[0].image_pull_policy.as_deref() == Some("Always")
                && spec
                    .image_pull_secrets
                    .is_some_and(|s| s[0].name == "registry-login"),
            "the step pod carries the step's pull policy and the Job's pull secret"
        );
        let reader = sa_token(&ns, "reader", true).await?;
        let (code, log) = read_log(&s.ctl.url, &ns.name, "private", "pull", Some(&reader)).await?;
        ensure!(
            code == 200 && log.contains("pulled from the private registry"),
            "{code} {log}"
        );
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn a_missing_or_wrong_pull_secret_ends_the_step_image_pull_failed_with_the_registrys_answer()
{
    in_namespace("job-private-refused", |ns| async move {
        let reg = registry()?;
        let _s = setup_with(&ns, "kubernetes").await?;
        pull_secret(&ns, "wrong-login", &reg, "not-the-password").await?;
        let started = Instant::now();
        apply(&ns, &private_job("missing", &reg.image, "no-such-secret")?).await?;
        apply(&ns, &private_job("wrong", &reg.image, "wrong-login")?).await?;

        for name in ["missing", "wrong"] {
            // first ErrImagePull, then the backend's 30 s start limit: well under 120 s
            let j = wait_for(&jobs(&ns), name, phase_is(JobPhase::Failed), 120).await?;
            eprintln!(
                "{name}: Failed {:?} after the Job was created",
                started.elapsed()
            );
            let st = j.status.context("status")?;
            let step = st.steps.first().context("step")?;
            let message = step.message.clone().unwrap_or_default();
            ensure!(
                step.phase == StepPhase::Failed
                    && step.reason.as_deref() == Some("ImagePullFailed")
                    && message.contains(&reg.image)
                    && message.contains("401 Unauthorized"),
                "{name}: the step says the pull failed and what the registry answered: {step:?}"
            );
            eprintln!("{name}: step message: {message}");
            let failed = conditions::find(&st.conditions, "Failed").context("Failed condition")?;
            ensure!(
                failed.message.contains("ImagePullFailed"),
                "{name}: {failed:?}"
            );
            if name == "missing" {
                // The registry cannot know the Secret is missing; the kubelet says so
                // on the pod, before it pulls without a login.
                let pod = step.pod_name.as_deref().context("pod name")?;
                let said = missing_secret_event(&ns, pod).await?;
                ensure!(said.contains("no-such-secret"), "{said}");
            }
        }
        Ok(())
    })
    .await;
}

/// The message of the kubelet's `FailedToRetrieveImagePullSecret` Event on `pod`.
async fn missing_secret_event(ns: &TestNs, pod: &str) -> anyhow::Result<String> {
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(ns.client.clone(), &ns.name);
    let params = kube::api::ListParams::default().fields(&format!(
        "involvedObject.name={pod},reason=FailedToRetrieveImagePullSecret"
    ));
    events
        .list(&params)
        .await?
        .items
        .into_iter()
        .find_map(|e| e.message)
        .with_context(|| format!("no FailedToRetrieveImagePullSecret Event on pod {pod}"))
}
