//! The Helm chart with `tls.enabled` on the real cluster: a CA and a server
//! certificate for the release's Service names made here (rcgen), a
//! `kubernetes.io/tls` Secret with `ca.crt`, `helm install` with one controller and a
//! static runner into the test's namespace; the controller Ready through its HTTPS
//! probes; the Service answering HTTPS for a client trusting the CA (plain HTTP and
//! a client without the CA get nothing); a Job on the static runner (`--ca-file` from
//! the Secret) and an on-demand Job (its runner pod handed the CA by the controller's
//! `--runner-ca-file`, as `BATON_CA_PEM`) both succeeding over HTTPS; then the release
//! removed (`chart::cleanup`).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use baton::crd::Job;
use baton::crd::job::JobPhase;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{Api, ObjectMeta, PostParams};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::chart::{base_values, helm_with};
use crate::helm::{
    FULLNAME, RELEASE, STATIC, STATIC_OBJECTS, chart_dir, cleanup, deployment_rolled_out, env_of,
    job_phase, leader_pod,
};
use crate::support::{STEP_IMAGE, TestNs, in_namespace, wait_for};

const SECRET: &str = "baton-tls";

/// (CA PEM, server certificate PEM, server key PEM): the certificate names the
/// release's Service as pods reach it, by every DNS name the namespace allows.
fn pki(ns: &str) -> anyhow::Result<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let names = vec![
        FULLNAME.to_owned(),
        format!("{FULLNAME}.{ns}"),
        format!("{FULLNAME}.{ns}.svc"),
        format!("{FULLNAME}.{ns}.svc.cluster.local"),
    ];
    let cert = CertificateParams::new(names)?.signed_by(&key, &issuer)?;
    Ok((ca_pem, cert.pem(), key.serialize_pem()))
}

/// PEM text without its line breaks, to compare certificates however wrapped.
fn squeeze(pem: &str) -> String {
    pem.split_whitespace().collect()
}

#[tokio::test]
async fn chart_serves_https_to_static_and_on_demand_runners() {
    in_namespace("chart-tls", |ns| async move {
        let result = chart_tls(&ns).await;
        cleanup(&ns).await;
        result
    })
    .await;
}

async fn chart_tls(ns: &TestNs) -> anyhow::Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path is not UTF-8")?;
    let n = ns.name.as_str();

    let (ca, cert, key) = pki(n)?;
    let secrets: Api<Secret> = Api::namespaced(ns.client.clone(), n);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            [("tls.crt", &cert), ("tls.key", &key), ("ca.crt", &ca)]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;

    // One controller replica (leader election on, as by default) and a static
    // runner; --wait: the controller is Ready only through its HTTPS probes.
    let t0 = Instant::now();
    let mut values = base_values(n, 1);
    for v in [
        "replicaCount=1".to_owned(),
        "tls.enabled=true".to_owned(),
        format!("tls.secretName={SECRET}"),
    ] {
        values.extend(["--set".to_owned(), v]);
    }
    helm_with(
        &[
            "install",
            RELEASE,
            chart,
            "--namespace",
            n,
            "--wait",
            "--timeout",
            "180s",
        ],
        &values,
    )
    .await?;
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), n);
    wait_for(&deployments, FULLNAME, deployment_rolled_out(), 60).await?;
    wait_for(&deployments, STATIC_OBJECTS, deployment_rolled_out(), 60).await?;
    let (leader, log) = leader_pod(ns).await?;
    eprintln!(
        "TLS install until the controller and the static runner are Ready: {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    let c = leader
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("controller pod without a container")?;
    let scheme = |p: Option<&k8s_openapi::api::core::v1::Probe>| {
        p.and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.scheme.clone())
    };
    ensure!(
        scheme(c.readiness_probe.as_ref()).as_deref() == Some("HTTPS")
            && scheme(c.liveness_probe.as_ref()).as_deref() == Some("HTTPS"),
        "Ready through HTTPS probes: {:?} {:?}",
        c.readiness_probe,
        c.liveness_probe
    );
    let args = c.args.clone().unwrap_or_default();
    ensure!(
        args.iter()
            .any(|a| a == "--runner-ca-file=/etc/baton/tls/ca.crt")
            && args
                .iter()
                .any(|a| a.starts_with("--runner-server-url=https://")),
        "the controller hands on-demand runners the CA: {args:?}"
    );
    ensure!(
        log.contains("tls=true") || log.contains("\"tls\":true"),
        "the controller says it serves TLS:\n{log}"
    );

    // From this node: the Service's ClusterIP answers HTTPS under the certificate's
    // name for a client trusting the CA, and nothing else.
    let services: Api<Service> = Api::namespaced(ns.client.clone(), n);
    let ip: IpAddr = services
        .get(FULLNAME)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("the Service has no ClusterIP")?
        .parse()?;
    let host = format!("{FULLNAME}.{n}.svc");
    let addr = SocketAddr::new(ip, 8080);
    let client = |trust: bool| -> anyhow::Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .resolve(&host, addr);
        if trust {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?);
        }
        Ok(b.build()?)
    };
    let res = client(true)?
        .get(format!("https://{host}:8080/readyz"))
        .send()
        .await
        .with_context(|| format!("HTTPS to the Service {host} at {addr}"))?;
    ensure!(res.status() == 200, "https /readyz: {}", res.status());
    let untrusted = client(false)?
        .get(format!("https://{host}:8080/readyz"))
        .send()
        .await;
    ensure!(
        untrusted.is_err(),
        "a client without the CA must not get an answer: {untrusted:?}"
    );
    let plain = client(false)?
        .get(format!("http://{addr}/livez"))
        .send()
        .await;
    ensure!(
        plain.is_err(),
        "plain HTTP to the Service answered: {plain:?}"
    );

    // A Job on the static runner, which trusts the Secret's ca.crt (--ca-file).
    let t0 = Instant::now();
    let jobs: Api<Job> = Api::namespaced(ns.client.clone(), n);
    let job = |name: &str, selector: Option<serde_json::Value>| -> anyhow::Result<Job> {
        let mut spec = serde_json::json!({ "steps": [{
            "name": "hello",
            "image": STEP_IMAGE,
            "script": "echo hello over tls",
        }] });
        if let Some(sel) = selector {
            spec["runnerSelector"] = sel;
        }
        Ok(serde_json::from_value(serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "Job",
            "metadata": { "name": name },
            "spec": spec,
        }))?)
    };
    let on_static = job(
        "static-tls",
        Some(serde_json::json!({ "matchLabels": { "pool": "static" } })),
    )?;
    jobs.create(&PostParams::default(), &on_static).await?;
    let done = wait_for(&jobs, "static-tls", job_phase(JobPhase::Succeeded), 120).await?;
    let st = done.status.context("status")?;
    ensure!(
        st.runner.as_deref() == Some(STATIC) && st.epoch == Some(1),
        "the Job ran once, on {STATIC}: {st:?}"
    );
    eprintln!(
        "Job on the static runner over HTTPS Succeeded in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // An on-demand Job: its runner pod, in this namespace (where the TLS Secret's
    // CA is not mounted), trusts the CA the controller put into BATON_CA_PEM.
    let t0 = Instant::now();
    jobs.create(&PostParams::default(), &job("on-demand-tls", None)?)
        .await?;
    let done = wait_for(&jobs, "on-demand-tls", job_phase(JobPhase::Succeeded), 180).await?;
    let st = done.status.context("status")?;
    ensure!(
        st.runner.as_deref() == Some("on-demand-tls-runner") && st.epoch == Some(1),
        "the on-demand Job ran once, on its own runner pod: {st:?}"
    );
    eprintln!(
        "on-demand Job over HTTPS Succeeded in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // Its pod (ended, kept until the Job goes): the https:// URL, and the CA as a
    // plain value, no Secret; success over HTTPS with a CA no system trusts proves
    // the runner used it.
    let pods: Api<Pod> = Api::namespaced(ns.client.clone(), n);
    let pod = pods.get("on-demand-tls-runner").await?;
    let c = pod
        .spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .context("runner pod without a container")?;
    let args = c.args.clone().unwrap_or_default().join(" ");
    ensure!(
        args.contains(&format!("--server https://{FULLNAME}.{n}.svc:8080")),
        "the runner pod reaches the Service over HTTPS: {args}"
    );
    let handed = env_of(&pod, "BATON_CA_PEM").unwrap_or_default();
    ensure!(
        squeeze(&handed) == squeeze(&ca),
        "the runner pod got the Secret's CA as BATON_CA_PEM:\n{handed}"
    );
    Ok(())
}
