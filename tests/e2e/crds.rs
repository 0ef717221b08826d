//! The CRDs on a real API server: they install, accept every example, refuse every
//! invalid manifest with a message a person understands, and keep a Job's spec fixed.

use anyhow::{Context, anyhow};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};

use crate::fixtures;
use crate::support::{self, TestNs, in_namespace};

fn api_for(ns: &TestNs, kind: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk(baton::crd::GROUP, baton::crd::VERSION, kind);
    Api::namespaced_with(ns.client.clone(), &ns.name, &ApiResource::from_gvk(&gvk))
}

/// Create one YAML document as-is (no client-side typing, so invalid fields reach
/// the server exactly as a user wrote them).
async fn create_raw(ns: &TestNs, doc: &serde_json::Value) -> Result<DynamicObject, kube::Error> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let obj: DynamicObject =
        serde_json::from_value(doc.clone()).map_err(kube::Error::SerdeError)?;
    api_for(ns, kind).create(&PostParams::default(), &obj).await
}

fn documents(yaml: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

#[tokio::test]
async fn crds_are_established_with_names_and_category() {
    let client = support::client().await;
    support::install_crds(&client).await.unwrap();
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for (plural, short) in [("jobs", "bj"), ("runners", "br"), ("runnertokens", "brt")] {
        let crd = api.get(&format!("{plural}.baton.dev")).await.unwrap();
        let names = crd
            .status
            .and_then(|s| s.accepted_names)
            .expect("accepted names");
        assert!(
            names
                .short_names
                .unwrap_or_default()
                .contains(&short.to_owned()),
            "{plural}: short name {short}"
        );
        assert_eq!(
            names.categories.unwrap_or_default(),
            vec!["baton".to_owned()],
            "{plural}: category"
        );
    }
}

#[tokio::test]
async fn every_example_is_accepted() {
    in_namespace("examples", |ns| async move {
        let examples = fixtures::yaml_files("examples");
        anyhow::ensure!(!examples.is_empty(), "examples/ holds no manifests");
        for (path, yaml) in examples {
            for doc in documents(&yaml)? {
                let created = create_raw(&ns, &doc)
                    .await
                    .with_context(|| format!("{} refused", path.display()))?;
                anyhow::ensure!(created.metadata.uid.is_some(), "{}: no uid", path.display());
            }
        }
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn every_invalid_manifest_is_refused_with_its_message() {
    in_namespace("invalid", |ns| async move {
        let table = fixtures::invalid_fixtures();
        anyhow::ensure!(
            table.len() >= 12,
            "table has only {} manifests",
            table.len()
        );
        let mut failures = Vec::new();
        for fx in &table {
            let doc = documents(&fx.yaml)?
                .into_iter()
                .next()
                .context("empty fixture")?;
            match create_raw(&ns, &doc).await {
                Ok(_) => failures.push(format!("{}: accepted", fx.path.display())),
                Err(kube::Error::Api(status)) if status.message.contains(&fx.expect) => {
                    eprintln!(
                        "refused as expected: {} -> {}",
                        fx.path.display(),
                        status.message
                    );
                }
                Err(other) => failures.push(format!(
                    "{}: expected {:?}, got {other}",
                    fx.path.display(),
                    fx.expect
                )),
            }
        }
        anyhow::ensure!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    })
    .await;
}

#[tokio::test]
async fn job_spec_is_immutable_except_cancel() {
    in_namespace("immutable", |ns| async move {
        let doc = serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1", "kind": "Job",
            "metadata": { "name": "fixed" },
            "spec": { "steps": [{ "name": "build", "image": "busybox", "script": "true" }] }
        });
        create_raw(&ns, &doc).await?;
        let api = api_for(&ns, "Job");
        let pp = PatchParams::default();

        let change_steps = serde_json::json!({ "spec": { "steps": [{ "name": "build", "image": "busybox", "script": "false" }] } });
        match api.patch("fixed", &pp, &Patch::Merge(&change_steps)).await {
            Err(kube::Error::Api(s)) if s.message.contains("immutable") => {}
            other => return Err(anyhow!("changing steps: expected an immutability refusal, got {other:?}")),
        }

        api.patch("fixed", &pp, &Patch::Merge(&serde_json::json!({ "spec": { "cancel": true } })))
            .await
            .context("setting spec.cancel must be allowed")?;

        match api.patch("fixed", &pp, &Patch::Merge(&serde_json::json!({ "spec": { "cancel": false } }))).await {
            Err(kube::Error::Api(s)) if s.message.contains("cannot be undone") => {}
            other => return Err(anyhow!("un-cancelling: expected a refusal, got {other:?}")),
        }
        Ok(())
    })
    .await;
}
