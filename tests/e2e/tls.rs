//! The runner API over HTTPS on the real cluster: a `baton controller` serving TLS from
//! files made here (a test CA and a certificate for 127.0.0.1), a `baton runner` that
//! trusts the CA through `--ca-file`, and a Job that succeeds through it (register, the
//! SSE control channel, claims, status and log uploads all over HTTPS).

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use baton::crd::Job;
use baton::crd::job::JobPhase;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::procs::{Proc, TempDir, baton_ok, wait_status};
use crate::support::{in_namespace, wait_for};

/// (CA PEM, server certificate PEM, server key PEM) for 127.0.0.1.
fn pki() -> anyhow::Result<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate()?;
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &issuer)?;
    Ok((ca_pem, cert.pem(), key.serialize_pem()))
}

fn https(ca: Option<&str>) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
    }
    Ok(b.build()?)
}

/// `addr=HOST:PORT` from a log line.
fn addr_in(line: &str) -> anyhow::Result<&str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))
        .with_context(|| format!("no addr= in {line:?}"))
}

/// A `baton runner` (local backend) for `url`, with `BATON_CA_FILE` when given.
fn runner(
    url: &str,
    ns: &str,
    name: &str,
    dir: &TempDir,
    token: &str,
    ca_file: Option<&str>,
) -> anyhow::Result<Proc> {
    let state = dir.join(name).to_string_lossy().into_owned();
    let mut envs = vec![("BATON_RUNNER_TOKEN", token)];
    if let Some(ca) = ca_file {
        envs.push(("BATON_CA_FILE", ca));
    }
    Proc::spawn(
        name,
        &[
            "runner",
            "--server",
            url,
            "--name",
            name,
            "--state-dir",
            &state,
            "--namespace",
            ns,
            "--backend",
            "local",
            "--health-addr",
            "127.0.0.1:0",
            "--ping-timeout",
            "5s",
            "--backoff-base",
            "200ms",
            "--backoff-max",
            "2s",
        ],
        &envs,
    )
}

#[tokio::test]
async fn a_job_succeeds_through_https_with_the_runner_trusting_the_ca_file() {
    in_namespace("tls", |ns| async move {
        let dir = TempDir::new(&ns.name);
        let (ca, cert, key) = pki()?;
        let path = |name: &str, pem: &str| -> anyhow::Result<String> {
            let p = dir.join(name);
            std::fs::write(&p, pem)?;
            Ok(p.to_string_lossy().into_owned())
        };
        let (ca_file, cert_file, key_file) = (
            path("ca.crt", &ca)?,
            path("tls.crt", &cert)?,
            path("tls.key", &key)?,
        );

        let ctl = Proc::spawn(
            "controller",
            &[
                "controller",
                "--namespace",
                &ns.name,
                "--listen",
                "127.0.0.1:0",
                "--ping-interval",
                "1s",
                "--poll-interval",
                "1s",
                "--tls-cert-file",
                &cert_file,
                "--tls-key-file",
                &key_file,
            ],
            &[],
        )?;
        let line = ctl.wait_for_log("runner API listening", 30).await?;
        ensure!(line.contains("tls=true"), "{line}");
        let addr = addr_in(&line)?.to_owned();
        let url = format!("https://{addr}");

        // Ready over HTTPS for a client trusting the CA; plain HTTP gets nothing.
        let trusting = https(Some(&ca))?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            match trusting.get(format!("{url}/readyz")).send().await {
                Ok(r) if r.status() == 200 => break,
                other if tokio::time::Instant::now() > deadline => {
                    bail!("{url}/readyz not 200 within 60s: {other:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        let plain = https(None)?
            .get(format!("http://{addr}/livez"))
            .send()
            .await;
        ensure!(plain.is_err(), "plain HTTP answered: {plain:?}");

        let token = baton_ok(&[
            "token", "create", "t1", "-n", &ns.name, "--runner", "r1", "--labels", "pool=tls",
        ])
        .await?;
        let token = token.trim();

        // Without the CA the runner cannot register, and says why.
        let mut untrusting = runner(&url, &ns.name, "r0", &dir, token, None)?;
        untrusting
            .wait_for_log("invalid peer certificate: UnknownIssuer", 30)
            .await?;
        untrusting.kill().await;

        let r1 = runner(&url, &ns.name, "r1", &dir, token, Some(&ca_file))?;
        let line = r1.wait_for_log("runner health listening", 30).await?;
        wait_status(&format!("http://{}/readyz", addr_in(&line)?), 200, 60).await?;

        let job: Job = serde_json::from_value(serde_json::json!({
            "apiVersion": "baton.dev/v1alpha1",
            "kind": "Job",
            "metadata": { "name": "over-tls" },
            "spec": {
                "runnerSelector": { "matchLabels": { "pool": "tls" } },
                "steps": [{ "name": "hello", "image": "busybox", "script": "echo hello over tls" }],
            }
        }))?;
        let jobs: Api<Job> = Api::namespaced(ns.client.clone(), &ns.name);
        jobs.create(&PostParams::default(), &job).await?;
        let done = |j: Option<&Job>| {
            j.and_then(|j| j.status.as_ref()?.phase)
                .is_some_and(|p| matches!(p, JobPhase::Succeeded | JobPhase::Failed))
        };
        let j = wait_for(&jobs, "over-tls", done, 90).await?;
        let st = j.status.context("status")?;
        ensure!(
            st.phase == Some(JobPhase::Succeeded) && st.runner.as_deref() == Some("r1"),
            "{st:?}"
        );

        // The step's log, uploaded by the runner, read back over HTTPS.
        let reader = crate::jobs::sa_token(&ns, "reader", true).await?;
        let res = trusting
            .get(format!(
                "{url}/v1/jobs/{}/over-tls/logs?step=hello",
                ns.name
            ))
            .bearer_auth(reader)
            .send()
            .await?;
        let (code, body) = (res.status().as_u16(), res.text().await?);
        ensure!(code == 200 && body == "hello over tls\n", "{code} {body:?}");
        Ok(())
    })
    .await;
}
