//! `kubectl baton job run | logs | cancel`.
//!
//! `run` applies a Job (a create); `cancel` patches `spec.cancel: true`; both are
//! what a GitOps repository could do too. Logs come from the controller's server
//! (`--server` / `BATON_SERVER`), which lets a caller read them only if Kubernetes
//! RBAC allows it to `get` that Job: the caller's bearer token (`--token` /
//! `BATON_TOKEN`) is checked there with a TokenReview and a SubjectAccessReview.
//! A kubeconfig that authenticates with client certificates has no bearer token to
//! forward: pass a ServiceAccount token (`kubectl create token ...`) instead.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use clap::Subcommand;
use futures::StreamExt;
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;

use super::plugin::KubeArgs;
use crate::crd::Job;
use crate::crd::job::JobPhase;

const MANAGER: &str = "kubectl-baton";

/// Where the logs come from, and who asks.
#[derive(Debug, clap::Args, Clone, Default)]
pub struct ServerArgs {
    /// The controller's server, e.g. http://baton.baton-system:8080.
    #[arg(long, value_name = "URL", env = "BATON_SERVER")]
    pub server: Option<String>,
    /// A Kubernetes bearer token whose user may `get` the Job.
    #[arg(long, env = "BATON_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// `job run | logs | cancel`.
#[derive(Debug, Subcommand)]
pub enum JobVerb {
    /// Apply a Job manifest; with -f follow its logs to the end and exit with its
    /// result (0 Succeeded, 1 Failed or Cancelled).
    Run {
        file: PathBuf,
        #[arg(short = 'f', long)]
        follow: bool,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Print a Job's logs (every step in spec order, or --step); -f follows them
    /// live until the Job ends.
    Logs {
        name: String,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        step: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
        #[command(flatten)]
        kube: KubeArgs,
    },
    /// Cancel a Job (spec.cancel: true), in any phase.
    Cancel {
        name: String,
        #[command(flatten)]
        kube: KubeArgs,
    },
}

pub async fn job(verb: JobVerb) -> anyhow::Result<i32> {
    match verb {
        JobVerb::Run {
            file,
            follow,
            server,
            kube,
        } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            let mut job: Job = serde_saphyr::from_str(&text)
                .map_err(|e| anyhow!("{} is not a Job manifest: {e}", file.display()))?;
            let (client, ns) = kube.connect().await?;
            job.metadata.namespace = Some(ns.clone());
            let api: Api<Job> = Api::namespaced(client, &ns);
            let pp = PostParams {
                field_manager: Some(MANAGER.into()),
                ..Default::default()
            };
            let created = api.create(&pp, &job).await.context("create the Job")?;
            let name = created.name_any();
            eprintln!("job.baton.dev/{name} created");
            if !follow {
                return Ok(0);
            }
            print_logs(&api, &ns, &name, None, true, &server).await?;
            finish(&api, &name).await
        }
        JobVerb::Logs {
            name,
            follow,
            step,
            server,
            kube,
        } => {
            let (client, ns) = kube.connect().await?;
            let api: Api<Job> = Api::namespaced(client, &ns);
            print_logs(&api, &ns, &name, step.as_deref(), follow, &server).await?;
            Ok(0)
        }
        JobVerb::Cancel { name, kube } => {
            let (client, ns) = kube.connect().await?;
            let api: Api<Job> = Api::namespaced(client, &ns);
            api.patch(
                &name,
                &PatchParams::apply(MANAGER),
                &Patch::Merge(serde_json::json!({ "spec": { "cancel": true } })),
            )
            .await
            .with_context(|| format!("cancel Job {name}"))?;
            println!("job.baton.dev/{name} cancel requested");
            Ok(0)
        }
    }
}

/// Wait for the Job to end; its exit code.
async fn finish(api: &Api<Job>, name: &str) -> anyhow::Result<i32> {
    let done = await_condition(api.clone(), name, |j: Option<&Job>| {
        j.and_then(|j| j.status.as_ref()?.phase)
            .is_some_and(JobPhase::is_finished)
    })
    .await
    .context("watch the Job")?
    .ok_or_else(|| anyhow!("Job {name} was deleted"))?;
    let phase = done.status.and_then(|s| s.phase).unwrap_or_default();
    eprintln!("job.baton.dev/{name} {phase:?}");
    Ok(if phase == JobPhase::Succeeded { 0 } else { 1 })
}

async fn print_logs(
    api: &Api<Job>,
    ns: &str,
    name: &str,
    only: Option<&str>,
    follow: bool,
    server: &ServerArgs,
) -> anyhow::Result<()> {
    let base = server
        .server
        .as_deref()
        .ok_or_else(|| {
            anyhow!("logs come from the controller's server: pass --server URL or set BATON_SERVER")
        })?
        .trim_end_matches('/')
        .to_owned();
    let token = server.token.as_deref().ok_or_else(|| {
        anyhow!("reading logs needs a Kubernetes bearer token: pass --token or set BATON_TOKEN (e.g. from `kubectl create token SA`)")
    })?;
    let job = api
        .get(name)
        .await
        .with_context(|| format!("get Job {name}"))?;
    let steps: Vec<String> = match only {
        Some(s) => {
            if !job.spec.steps.iter().any(|st| st.name == s) {
                bail!("Job {name} has no step {s}");
            }
            vec![s.to_owned()]
        }
        None => job.spec.steps.iter().map(|s| s.name.clone()).collect(),
    };
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .build()?;
    let many = steps.len() > 1;
    for step in steps {
        if many {
            println!("==> step {step} <==");
        }
        let res = http
            .get(format!("{base}/v1/jobs/{ns}/{name}/logs"))
            .query(&[
                ("step", step.as_str()),
                ("follow", if follow { "true" } else { "false" }),
            ])
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("reach the server at {base}"))?;
        let status = res.status();
        if !status.is_success() {
            let body = res.text().await.unwrap_or_default();
            bail!("the server refused the logs of step {step}: {status} {body}");
        }
        let mut body = res.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.context("read the log stream")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&chunk)?;
            out.flush()?;
        }
    }
    Ok(())
}
